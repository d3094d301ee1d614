"""``vtag catalog register``: register the tag tables and views by name, create missing tables and set
the table and column comments (the one explicit catalog write; the read commands never commit).

The tag job creates its tables with their comments; this command brings a warehouse written by an
older version up to date (one metadata commit per table whose comments differ) and registers the
names in the metastore (the embedded Derby one beside the warehouse unless the job conf says
otherwise), for Spark shells and BI tools on that metastore.
"""

from __future__ import annotations

import argparse
import json
import sys

from vtag.jobs.config import add_job_conf_args


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("register", help="register tables and views, create missing tables, set comments (writes)")
    add_job_conf_args(r)
    r.add_argument("--no-create", action="store_true", help="register only the tables that exist (create none)")
    r.add_argument("--json", action="store_true", help="print the registered names as JSON")
    return p


def main(args: argparse.Namespace) -> int:
    """Run ``vtag catalog register``; returns the exit status.

    Parameters
    ----------
    args
        The parsed arguments of :func:`_arg_parser`.
    """
    from vtag.jobs.analytics.sql import session_conf
    from vtag.jobs.config import ConfigError, conf_from_args
    from vtag.jobs.spark.session import build_session
    from vtag.jobs.warehouse.catalog import (
        CatalogError,
        _metastore_hint,
        check_metastore_free,
        register_tables,
    )

    try:
        conf = session_conf(conf_from_args(args), metastore=True)
        check_metastore_free(conf)
        spark = build_session(conf)
        names = register_tables(spark, conf, create_missing=not args.no_create, comments=True)
    except (ConfigError, CatalogError, ValueError, OSError) as exc:
        print(f"vtag catalog: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        hint = _metastore_hint(exc)
        if hint is exc:
            raise
        print(f"vtag catalog: {hint}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"registered": names}))
    else:
        print(f"registered {len(names)} names: " + ", ".join(names))
    return 0
