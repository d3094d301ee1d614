"""``vtag sql``: one Spark SQL statement over the catalog (tables and views by name).

The session registers the tag tables and views by name first (:func:`jobs.catalog.register_names`,
idempotent, metastore only: a read never commits to a Delta table; comments and missing tables are
the tag job's and ``vtag catalog register``'s) and makes the catalog database current, so ``SELECT * FROM video_tags`` and
``vtag.video_tags`` both resolve. Unless the job conf sets ``spark.sql.catalogImplementation``,
the session uses the Hive catalog: the embedded default keeps it in Derby beside the warehouse
(``<warehouse>/../.metastore``), so the names persist for any later Spark session on that metastore.
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

from jobs.query import add_common_args, emit, load_conf

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--no-register", action="store_true", help="use the catalog as it is (no registration)")
    return p


def session_conf(conf: dict[str, Any]) -> dict[str, Any]:
    """The job conf with the Hive catalog unless the conf chose a catalog implementation."""
    conf = dict(conf)
    conf["spark"] = dict(conf.get("spark") or {})
    conf["spark"].setdefault("spark.sql.catalogImplementation", "hive")
    return conf


def prepare(spark: SparkSession, conf: dict[str, Any], register: bool = True) -> str:
    """Register the tables and views by name (when ``register``; no Delta commit, see
    :func:`jobs.catalog.register_names`) and make the catalog database current.

    Parameters
    ----------
    spark
        The session.
    conf
        The job conf.
    register
        Register the names first (``--no-register``: use the catalog as it is).
    """
    from jobs.catalog import _metastore_hint, database, register_names

    db = database(conf)
    if register:
        register_names(spark, conf)
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


def main(args: argparse.Namespace) -> int:
    from jobs.catalog import CatalogError, check_metastore_free
    from jobs.config import ConfigError
    from jobs.spark import build_session

    try:
        conf = session_conf(load_conf(args))
        check_metastore_free(conf)
        spark = build_session(conf)
    except (ConfigError, CatalogError, ValueError, OSError) as exc:
        print(f"vtag sql: {exc}", file=sys.stderr)
        return 1
    try:
        result = to_arrow(run_sql(spark, conf, args.statement, register=not args.no_register))
    except (CatalogError, ValueError) as exc:
        print(f"vtag sql: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # AnalysisException, ParseException, ... carry a readable message
        name = type(exc).__name__
        if name in ("AnalysisException", "ParseException", "SparkRuntimeException", "IllegalArgumentException"):
            print(f"vtag sql: {name}: {exc}", file=sys.stderr)
            return 1
        raise
    emit(result, args)
    return 0
