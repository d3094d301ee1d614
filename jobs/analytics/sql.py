"""``vtag sql``: Spark SQL over the catalog (tables and views by name): statements, a file, or a shell.

``vtag sql "SELECT ...; SELECT ..."`` runs each ``;``-separated statement on one session and prints
each result; ``-f file.sql`` runs a file; without a statement it reads the statements from stdin, or
on a terminal opens an interactive shell (multi-line statements ended by ``;``, history in
``~/.vtag_sql_history``): :mod:`vtag.jobs.analytics.sql_shell`. An error is one line (its condition, the missing
column or table, the position); the plan and the JVM trace go to the Spark log file.

The session registers the tag tables and views by name first (:func:`vtag.jobs.warehouse.catalog.register_names`,
idempotent, metastore only: a read never commits to a Delta table; comments and missing tables are
the tag job's and ``vtag catalog register``'s) and makes the catalog database current, so ``SELECT * FROM video_tags`` and
``vtag.video_tags`` both resolve. The names live in Spark's in-memory catalog of the session (no
metastore to boot, see bench/results/spark_start.md), and only those the statements name are
registered (:func:`vtag.jobs.warehouse.catalog.needed_names`: each costs a Delta log read); ``--metastore``
(or ``spark.sql.catalogImplementation=hive``) uses the Hive catalog in Derby beside the warehouse
(``<warehouse>/../.metastore``), where the names persist for any later Spark session.
Delta's SQL works as usual: ``DESCRIBE HISTORY video_tags``, ``SELECT ... FROM video_tags VERSION AS
OF 3``, ``TIMESTAMP AS OF '2024-06-05'``.

The result is printed as a table, or written whole to one ``--csv`` / ``--parquet`` file (collected on
the driver: for results of millions of rows write a table from Spark instead).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from vtag.jobs.analytics.query import add_common_args, emit
from vtag.jobs.config import conf_from_args
from vtag.jobs.progress import one_line

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, statements=True)
    p.add_argument("--no-register", action="store_true", help="use the catalog as it is (no registration)")
    p.add_argument("--metastore", action="store_true",
                   help="register and read names in the persistent Hive metastore beside the warehouse "
                        "(default: a session-only catalog, which starts faster)")
    p.add_argument("--verbose", action="store_true",
                   help="Spark's logs on the terminal (default: <warehouse>/../.logs/spark.log)")
    return p


def _log_trace(conf: dict[str, Any], exc: BaseException) -> str | None:
    """Append the whole error to the Spark log file; returns its path (None when it cannot be written)."""
    import traceback

    from vtag.jobs.spark.session import log_file

    path = log_file(conf)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("vtag sql: " + "".join(traceback.format_exception(exc)) + "\n")
    except OSError:
        return None
    return str(path)


def session_conf(conf: dict[str, Any], metastore: bool = False) -> dict[str, Any]:
    """The job conf with a catalog implementation: Spark's in-memory catalog (names for this session
    only: no metastore to start, nothing written, any number of processes at once), or with
    ``metastore`` the Hive catalog (the embedded Derby metastore beside the warehouse, names that
    persist; ``vtag catalog register``, ``vtag sql --metastore``). A conf that sets
    ``spark.sql.catalogImplementation`` keeps its choice.

    Parameters
    ----------
    conf
        The job conf.
    metastore
        Use the persistent Hive metastore.
    """
    conf = dict(conf)
    conf["spark"] = dict(conf.get("spark") or {})
    conf["spark"].setdefault("spark.sql.catalogImplementation", "hive" if metastore else "in-memory")
    return conf


def prepare(spark: SparkSession, conf: dict[str, Any], register: bool = True, only: set[str] | None = None) -> str:
    """Register the tables and views by name (when ``register``; no Delta commit, see
    :func:`vtag.jobs.warehouse.catalog.register_names`) and make the catalog database current.

    Parameters
    ----------
    spark
        The session.
    conf
        The job conf.
    register
        Register the names first (``--no-register``: use the catalog as it is).
    only
        Register only these names (:func:`vtag.jobs.warehouse.catalog.needed_names` of the statements; None: all).
    """
    from vtag.jobs.warehouse.catalog import _metastore_hint, database, register_names

    db = database(conf)
    if register:
        register_names(spark, conf, only)
    try:
        spark.sql(f"USE {db}")
    except Exception as exc:
        raise _metastore_hint(exc) from exc
    return db


def run_sql(spark: SparkSession, conf: dict[str, Any], statement: str, register: bool = True) -> DataFrame:
    """The DataFrame of ``statement`` over the catalog (lazy for queries; DDL runs at once)."""
    if not statement.strip():
        raise ValueError("empty SQL statement")
    prepare(spark, conf, register)
    return spark.sql(statement)


def to_arrow(df: DataFrame) -> pa.Table:
    """Collect ``df`` as an Arrow table (Spark's Arrow path; types kept, nested included)."""
    return df.toArrow()


def _statements(args: argparse.Namespace) -> list[str] | None:
    """The statements to run (None: the interactive shell)."""
    from vtag.jobs.analytics.sql_shell import split_statements

    if args.file and args.statement:
        raise ValueError("give a statement or -f FILE, not both")
    if args.file:
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read()
    elif args.statement is not None:
        text = args.statement
    elif sys.stdin.isatty():
        return None
    else:
        text = sys.stdin.read()
    statements = split_statements(text)
    if not statements:
        raise ValueError("empty SQL statement")
    if len(statements) > 1 and (args.csv or args.parquet):
        raise ValueError("--csv/--parquet take one statement; this input has " + str(len(statements)))
    return statements


def main(args: argparse.Namespace) -> int:
    """Run ``vtag sql``: each statement in turn on one session, or the interactive shell.

    Parameters
    ----------
    args
        The parsed arguments of :func:`_arg_parser`.
    """
    from vtag.jobs.analytics.sql_shell import repl, run_all
    from vtag.jobs.config import ConfigError
    from vtag.jobs.spark.session import build_session
    from vtag.jobs.warehouse.catalog import CatalogError, check_metastore_free, needed_names

    if getattr(args, "verbose", False):
        import os

        os.environ["VTAG_VERBOSE"] = "1"
    try:
        statements = _statements(args)
        conf = session_conf(conf_from_args(args), metastore=getattr(args, "metastore", False))
        check_metastore_free(conf)
        spark = build_session(conf)
        # with the Hive metastore every name is registered (it persists); else only what the statements name
        only = None if statements is None or conf["spark"]["spark.sql.catalogImplementation"] == "hive" \
            else needed_names(statements)
        prepare(spark, conf, register=not args.no_register, only=only)
    except (ConfigError, CatalogError, ValueError, OSError) as exc:
        print(f"vtag sql: {exc}", file=sys.stderr)
        return 1

    def run_one(statement: str) -> bool:
        try:
            result = to_arrow(spark.sql(statement))
        except (CatalogError, ValueError) as exc:
            print(f"vtag sql: {exc}", file=sys.stderr)
            return False
        except Exception as exc:  # AnalysisException, ParseException, ... carry a readable first line
            name = type(exc).__name__
            if name in ("AnalysisException", "ParseException", "SparkRuntimeException", "IllegalArgumentException"):
                where = _log_trace(conf, exc)
                print(f"vtag sql: {name}: {one_line(exc)}" + (f" (details: {where})" if where else ""), file=sys.stderr)
                return False
            raise
        emit(result, args)
        sys.stdout.flush()
        return True

    if statements is None:
        return repl(run_one)
    return run_all(statements, run_one, echo=len(statements) > 1)
