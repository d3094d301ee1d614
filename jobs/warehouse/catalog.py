"""The tag tables by name: a catalog database, table and column comments, the analysts' views.

Both query engines see the same names:

* Spark (``vtag sql``, any Spark shell on the same metastore): :func:`register_tables` registers the
  Delta tables as external tables ``<db>.video_tags``, ``<db>.video_tags_quarantine``,
  ``<db>.tag_runs`` and ``<db>.uploader_profiles`` (``CREATE TABLE ... USING DELTA LOCATION``; the data stays where the jobs write
  it) and creates the views of :data:`VIEWS`. The database is the job conf's ``catalog_database``
  (default ``vtag``; ``catalog.schema`` where the cluster has a multi-level catalog).
* DuckDB (``vtag query``): :mod:`vtag.jobs.analytics.query` builds the same views from :func:`view_sql` over Arrow
  datasets of delta-rs.

When ``dump_root`` holds Parquet days, ``ugc_dump`` (the dump files, external Parquet table) and the
view ``video_uploads`` (uploader, title and upload time per video and day) are registered too:
``video_tags`` has no uploader column, so uploader questions join the dump.

Where the names live: Spark's catalog is per session unless ``spark.sql.catalogImplementation`` is
``hive``. pyspark ships the Hive client and Derby, so the embedded default is a Hive metastore in
embedded Derby at ``<warehouse>/../.metastore/metastore_db`` (``vtag.jobs.spark.session`` points
``derby.system.home`` there): registrations persist across sessions. Embedded Derby admits one JVM at
a time, so only ``vtag catalog register`` and ``vtag sql --metastore`` use it; ``vtag sql`` and the
nightly jobs keep the in-memory catalog (and can run side by side); on a cluster the jobs register
through the shared metastore when the conf says ``catalog_register: true`` (:func:`register_if_configured`).

Column comments come from the ``doc`` metadata of ``models/schema.py``; :data:`COLUMN_NOTES` fills in
the columns that have none yet. A table's comments live in its Delta log, so setting them is a
metadata commit, made once (only when a comment differs).
"""

from __future__ import annotations

import glob
import os
import re
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from vtag.jobs.warehouse.metastore import (  # noqa: F401  (re-exported: vtag.jobs.warehouse.catalog is the catalog's one name)
    _BUSY,
    CatalogError,
    _metastore_hint,
    check_metastore_free,
    local_metastore,
)
from vtag.jobs.warehouse.reasons import replace_marked_section
from vtag.jobs.warehouse.table_docs import (  # noqa: F401  (re-exported: the tables' schemas and comments)
    COLUMN_NOTES,
    PARTITION_COLUMNS,
    SCHEMAS,
    TABLE_NAMES,
    column_comments,
)
from vtag.models.schema import VIDEO_TAGS_SCHEMA

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

DEFAULT_DATABASE = "vtag"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: view name -> comment
VIEW_COMMENTS = {
    "video_tag_labels": "vtag: one row per video, day and label of video_tags.tags (ancestors and extra tags included)",
    "video_tags_latest": "vtag: the latest row of video_tags per video_id across days",
    "video_uploads": "vtag: the upload context of the Parquet dumps under dump_root (uploader, title, upload time)",
}
VIEWS = tuple(VIEW_COMMENTS)

#: the dump columns every dump has (vtag.models.schema.REQUIRED_DUMP_COLUMNS) that analysts join on
UPLOAD_COLUMNS = ("video_id", "uploader_id", "title", "upload_ts")
#: Spark only: the Parquet dump files as an external table (all DUMP_SCHEMA columns, no ``dt``)
DUMP_TABLE = "ugc_dump"


def database(conf: dict[str, Any]) -> str:
    """The catalog database of the job conf (``catalog_database``), validated: ``db`` or ``cat.db``."""
    name = str(conf.get("catalog_database") or DEFAULT_DATABASE)
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(_IDENT.match(p) for p in parts):
        raise CatalogError(f"catalog_database {name!r}: expected an identifier or catalog.database")
    return name


def short_database(conf: dict[str, Any]) -> str:
    """The database name without its catalog (the schema name DuckDB uses)."""
    return database(conf).split(".")[-1]


def _sql_string(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def duck_string(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------- views
def view_sql(name: str, db: str, engine: str, upload_glob: str | None = None) -> str:
    """The ``SELECT`` of view ``name`` over the tables of ``db`` for ``engine`` (``spark`` | ``duckdb``).

    Both engines' texts return the same columns, names and rows; they differ only where the SQL
    dialects do (explode/unnest, how a Parquet glob is read).
    """
    if engine not in ("spark", "duckdb"):
        raise ValueError(f"unknown engine {engine!r}")
    if name == "video_tag_labels":
        explode = "explode" if engine == "spark" else "unnest"
        return (
            "SELECT video_id, dt, tag.node_id AS tag_id, tag.name AS tag_name, tag.level AS tag_level, "
            "tag.score AS tag_score, tag.node_id = leaf_id AS is_primary_leaf, leaf_id, level1, "
            "taxonomy_version, model_version, run_id "
            f"FROM (SELECT video_id, dt, leaf_id, level1, taxonomy_version, model_version, run_id, {explode}(tags) AS tag "
            f"FROM {db}.video_tags) AS labels"
        )
    if name == "video_tags_latest":
        cols = ", ".join(VIDEO_TAGS_SCHEMA.names)
        return (
            f"SELECT {cols} FROM (SELECT {cols}, row_number() OVER "
            "(PARTITION BY video_id ORDER BY dt DESC, tagged_at DESC, run_id DESC) AS _rank "
            f"FROM {db}.video_tags) AS ranked WHERE _rank = 1"
        )
    if name == "video_uploads":
        cols = ", ".join(UPLOAD_COLUMNS)
        pattern = "'dt=([0-9]{4}-[0-9]{2}-[0-9]{2})'"
        if engine == "spark":  # over the external Parquet table DUMP_TABLE (see register_tables)
            return (
                f"SELECT {cols}, CAST(regexp_extract(_metadata.file_path, {pattern}, 1) AS DATE) AS dt "
                f"FROM {db}.{DUMP_TABLE}"
            )
        if not upload_glob:
            raise ValueError("video_uploads needs the dump's Parquet glob")
        return (
            f"SELECT {cols}, CAST(regexp_extract(filename, {pattern}, 1) AS DATE) AS dt "
            f"FROM read_parquet({duck_string(upload_glob)}, filename = true, union_by_name = true)"
        )
    raise KeyError(f"unknown view {name!r}; views: {', '.join(VIEWS)}")


def dump_root(conf: dict[str, Any]) -> str | None:
    """The conf's ``dump_root`` as an absolute local path, when it is a local directory holding Parquet days.

    Dumps in JSON Lines (or out of reach) get no ``video_uploads`` view.
    """
    root = conf.get("dump_root")
    if not root:
        return None
    root = str(root)
    if "://" in root and not root.startswith("file:"):
        return None
    local = os.path.abspath(root.removeprefix("file:"))
    return local if glob.glob(os.path.join(local, "dt=*", "*.parquet")) else None


def upload_glob(conf: dict[str, Any]) -> str | None:
    """``<dump_root>/dt=*/*.parquet`` for DuckDB (see :func:`dump_root`)."""
    root = dump_root(conf)
    return os.path.join(root, "dt=*", "*.parquet") if root else None


# ------------------------------------------------------------------------------- Spark catalog
def _spark_location(spark: SparkSession, qualified: str) -> str | None:
    rows = spark.sql(f"DESCRIBE DETAIL {qualified}").collect()
    return rows[0]["location"] if rows else None


def _same_location(a: str | None, b: str) -> bool:
    def norm(p: str | None) -> str:
        p = str(p or "")
        p = p.removeprefix("file://").removeprefix("file:")
        return p.rstrip("/")

    return norm(a) == norm(b)


def _table_exists(spark: SparkSession, qualified: str) -> bool:
    return bool(spark.catalog.tableExists(qualified))


def _sync_comments(spark: SparkSession, qualified: str, table: str) -> int:
    """Set the column comments that differ; returns how many changed (one commit for all of them)."""
    from vtag.jobs.warehouse.tables import with_retries

    wanted = column_comments(table)
    current = {f.name: f.metadata.get("comment", "") for f in spark.table(qualified).schema.fields}
    changes = [(c, text) for c, text in wanted.items() if text and current.get(c, "") != text and c in current]
    if not changes:
        return 0
    specs = ", ".join(f"`{c}` COMMENT {_sql_string(text)}" for c, text in changes)
    try:
        with_retries(lambda: spark.sql(f"ALTER TABLE {qualified} ALTER COLUMN {specs}"))
    except Exception as exc:  # an engine without multi-column ALTER: one statement per column
        if "PARSE_SYNTAX_ERROR" not in str(exc) and "NOT_SUPPORTED" not in str(exc):
            raise
        for c, text in changes:
            with_retries(lambda c=c, text=text: spark.sql(f"ALTER TABLE {qualified} ALTER COLUMN `{c}` COMMENT {_sql_string(text)}"))
    return len(changes)


def needed_names(statements: list[str]) -> set[str] | None:
    """The tables and views ``statements`` name (a view brings the tables it reads), or None (all) when
    they name none of them (``SHOW TABLES``, ``DESCRIBE DATABASE``...).

    Parameters
    ----------
    statements
        SQL statements.
    """
    text = " ".join(statements).lower()
    words = set(re.findall(r"[a-z_][a-z0-9_]*", text))
    found = {n for n in (*TABLE_NAMES, *VIEWS, DUMP_TABLE) if n in words}
    if not found:
        return None
    if found & {"video_tag_labels", "video_tags_latest"}:
        found.add("video_tags")
    if "video_uploads" in found:
        found.add(DUMP_TABLE)
    return found


def register_tables(spark: SparkSession, conf: dict[str, Any], create_missing: bool = True,
                    comments: bool = True, only: set[str] | None = None) -> list[str]:
    """Register the Delta tables and the views in the catalog database; returns the qualified names.

    Idempotent: a table already registered at its warehouse path is left alone (but for comments that
    differ, when ``comments``), one registered elsewhere (another warehouse) is re-pointed, a missing
    Delta table is created empty when ``create_missing`` (so that the views resolve), views are
    replaced. Creating a table and syncing comments are Delta commits; with ``create_missing=False,
    comments=False`` (:func:`register_names`, what the read commands use) only the metastore changes.

    Parameters
    ----------
    spark
        The session (its catalog implementation decides where the names live).
    conf
        The job conf (``warehouse``, ``catalog_database``, ``dump_root``).
    create_missing
        Create missing Delta tables empty (a write).
    comments
        Set the column comments of :func:`column_comments` that differ (a metadata commit per table).
    only
        Register only these tables and views (:func:`needed_names`; None: all). Each name costs a read
        of its Delta log or its analysis at start.
    """
    from vtag.jobs.warehouse.tables import TABLES, ensure_table, table_path, with_retries

    db = database(conf)
    try:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {db} COMMENT {_sql_string('vtag: video type tags (Delta tables)')}")
    except Exception as exc:
        raise _metastore_hint(exc) from exc
    names = []
    for name in TABLE_NAMES:
        if only is not None and name not in only:
            continue
        qualified = f"{db}.{name}"
        if create_missing:
            path = ensure_table(spark, conf, name)
        else:
            from delta.tables import DeltaTable

            path = table_path(conf, name)
            if not DeltaTable.isDeltaTable(spark, path):
                continue
        if _table_exists(spark, qualified) and not _same_location(_spark_location(spark, qualified), path):
            spark.sql(f"DROP TABLE {qualified}")  # external: drops the registration, never the data
        with_retries(
            lambda q=qualified, p=path, n=name: spark.sql(
                f"CREATE TABLE IF NOT EXISTS {q} USING DELTA LOCATION {_sql_string(p)}"
                + (f" COMMENT {_sql_string(TABLES[n].comment)}" if comments else "")
            )
        )
        if comments:
            _sync_comments(spark, qualified, name)
        names.append(qualified)
    if f"{db}.video_tags" not in names:
        return names
    # the dump, for video_uploads: an external Parquet table reading every *.parquet below dump_root
    # (covers and markers skipped) with the dump's schema; no partition discovery, dt comes from the
    # file path. A glob path (parquet.`root/dt=*/*.parquet`) would log a stack trace on every use.
    root = dump_root(conf)
    if only is not None and DUMP_TABLE not in only:
        root = None
    spark.sql(f"DROP TABLE IF EXISTS {db}.{DUMP_TABLE}")  # external: drops the registration, never the files
    if root:
        from vtag.jobs.spark.schema import to_spark
        from vtag.models.schema import DUMP_SCHEMA

        spark.catalog.createTable(
            f"{db}.{DUMP_TABLE}",
            path=root,
            source="parquet",
            schema=to_spark(DUMP_SCHEMA.set(0, DUMP_SCHEMA.field(0).with_nullable(True))),
            description="vtag: the Parquet files of the daily dumps under dump_root (input of the tag job)",
            recursiveFileLookup="true",
            pathGlobFilter="*.parquet",
        )
        names.append(f"{db}.{DUMP_TABLE}")
    for view in VIEWS:
        if only is not None and view not in only:
            continue
        qualified = f"{db}.{view}"
        if view == "video_uploads" and not root:
            spark.sql(f"DROP VIEW IF EXISTS {qualified}")
            continue
        spark.sql(
            f"CREATE OR REPLACE VIEW {qualified} COMMENT {_sql_string(VIEW_COMMENTS[view])} AS "
            + view_sql(view, db, "spark")
        )
        names.append(qualified)
    return names


def register_names(spark: SparkSession, conf: dict[str, Any], only: set[str] | None = None) -> list[str]:
    """Register the existing tables and the views by name without a single Delta commit (the read
    commands: ``vtag sql``, ``vtag report --engine spark``); returns the qualified names.

    Missing tables stay missing and comments stay as they are: the tag job creates its tables with
    their comments, and ``vtag catalog register`` brings an older warehouse's comments up to date.

    Parameters
    ----------
    spark
        The session.
    conf
        The job conf.
    only
        Only these names (:func:`needed_names`); None: all.
    """
    return register_tables(spark, conf, create_missing=False, comments=False, only=only)


def register_if_configured(spark: SparkSession, conf: dict[str, Any]) -> list[str]:
    """For the jobs: register the tables when the conf says ``catalog_register: true`` (clusters)."""
    flag = str(conf.get("catalog_register", "false")).strip().lower()
    if flag in ("1", "true", "yes", "on"):
        return register_tables(spark, conf)
    return []


# ------------------------------------------------------------------------------------ docs
def _type_name(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return f"array<{_type_name(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{t.field(i).name}: {_type_name(t.field(i).type)}" for i in range(t.num_fields)) + ">"
    if pa.types.is_timestamp(t):
        return "timestamp (UTC)"
    if pa.types.is_date32(t):
        return "date"
    return {"int32": "int", "int64": "bigint", "float": "float", "double": "double", "bool": "boolean"}.get(str(t), str(t))


def schema_markdown() -> str:
    """The table schemas as Markdown (the section of docs/analysts.md between the schema markers)."""
    from vtag.jobs.warehouse.tables import TABLES

    lines = []
    for name in TABLE_NAMES:
        parts = PARTITION_COLUMNS[name]
        lines.append(f"### `{name}`")
        lines.append("")
        text = TABLES[name].comment.removeprefix("vtag: ").rstrip(".")
        lines.append(text[:1].upper() + text[1:] + "."
                     + (f" Partitioned by `{', '.join(parts)}`." if parts else ""))
        lines.append("")
        lines.append("| column | type | null | comment |")
        lines.append("|---|---|---|---|")
        docs = column_comments(name)
        for f in SCHEMAS[name]:
            lines.append(f"| `{f.name}` | `{_type_name(f.type)}` | {'yes' if f.nullable else 'no'} | {docs[f.name]} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


SCHEMA_BEGIN = "<!-- schema:begin (generated by `python -m vtag.jobs.warehouse.catalog docs/analysts.md`) -->"
SCHEMA_END = "<!-- schema:end -->"


def update_docs(path: str) -> bool:
    """Rewrite the generated schema section of ``path``; returns whether it changed."""
    return replace_marked_section(path, SCHEMA_BEGIN, SCHEMA_END, schema_markdown(), "schema", CatalogError)


if __name__ == "__main__":  # python -m vtag.jobs.warehouse.catalog docs/analysts.md
    import sys

    for p in sys.argv[1:] or ["docs/analysts.md"]:
        print(f"{p}: {'updated' if update_docs(p) else 'up to date'}")
