"""The Delta tables under the warehouse root: definitions, creation, per-day writes, run records.

``video_tags`` and ``video_tags_quarantine`` are partitioned by ``dt``; a day is written with
``replaceWhere`` so that re-running a day replaces exactly that day, atomically (a run killed before
its commit leaves the table at the previous version); :mod:`vtag.jobs.pipeline.publish` makes the two tables of a day
one unit. ``tag_runs`` has one row per run, appended when the run starts and updated in place at its end.
``uploader_profiles`` is rewritten whole by :mod:`vtag.jobs.pipeline.profiles` (one overwrite commit per refresh).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, TypeVar

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from vtag.jobs.spark.schema import to_spark
from vtag.jobs.spark.session import warehouse_path
from vtag.models.schema import QUARANTINE_SCHEMA, TAG_RUNS_SCHEMA, UPLOADER_PROFILES_SCHEMA, VIDEO_TAGS_SCHEMA


@dataclass(frozen=True)
class TableDef:
    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...]
    comment: str


TABLES: dict[str, TableDef] = {
    "video_tags": TableDef(
        "video_tags",
        VIDEO_TAGS_SCHEMA,
        ("dt",),
        "vtag: one row per tagged video and day: primary leaf, its path and all labels after constraint decoding",
    ),
    "video_tags_quarantine": TableDef(
        "video_tags_quarantine",
        QUARANTINE_SCHEMA,
        ("dt",),
        "vtag: rows of a day's dump that could not be tagged, with the reason",
    ),
    "tag_runs": TableDef(
        "tag_runs",
        TAG_RUNS_SCHEMA,
        (),
        "vtag: one row per job run (tag, retag): versions, row counts, timings, status",
    ),
    "uploader_profiles": TableDef(
        "uploader_profiles",
        UPLOADER_PROFILES_SCHEMA,
        (),
        "vtag: per uploader and taxonomy version, the category counts of the uploader's earlier tagged "
        "(each tag weighted by its score) or labeled videos (the relational model input), rewritten after each tag run",
    ),
}

T = TypeVar("T")

_RETRYABLE = (
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException",
    "ProtocolChangedException",
    "MetadataChangedException",
    "DELTA_CONCURRENT",
    "already exists",
    "TABLE_OR_VIEW_ALREADY_EXISTS",
    "DELTA_PROTOCOL_CHANGED",
    "DELTA_METADATA_CHANGED",
)


def with_retries(fn: Callable[[], T], attempts: int = 5, base_delay: float = 0.5, also: tuple[str, ...] = ()) -> T:
    """Run ``fn``, retrying Delta's optimistic-concurrency conflicts (and errors naming ``also``) with backoff."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # py4j / Delta exceptions carry the class name in the message
            text = f"{type(exc).__name__}: {exc}"
            if attempt == attempts - 1 or not any(k in text for k in _RETRYABLE + also):
                raise
            time.sleep(base_delay * (2**attempt))
    raise AssertionError("unreachable")


def table_path(conf: dict[str, Any], name: str) -> str:
    return warehouse_path(conf, name)


def _with_comments(name: str, schema):
    """``schema`` with every column's comment of :func:`vtag.jobs.warehouse.table_docs.column_comments` (set at creation:
    no later metadata commit is needed for them)."""
    from pyspark.sql import types as T

    from vtag.jobs.warehouse.table_docs import column_comments

    notes = column_comments(name)
    return T.StructType([
        T.StructField(f.name, f.dataType, f.nullable, {**f.metadata, "comment": notes[f.name]} if notes.get(f.name) else f.metadata)
        for f in schema.fields
    ])


def ensure_table(spark: SparkSession, conf: dict[str, Any], name: str) -> str:
    """Create table ``name`` at its warehouse path, with its table and column comments, if it does
    not exist; return the path."""
    from delta.tables import DeltaTable

    from vtag.jobs.warehouse.log_reads import is_table

    tdef = TABLES[name]
    path = table_path(conf, name)
    if is_table(conf, name):  # the common case, without a Spark query
        return path

    def create() -> None:
        if DeltaTable.isDeltaTable(spark, path):
            return
        builder = (
            DeltaTable.createIfNotExists(spark)
            .location(path)
            .addColumns(_with_comments(name, to_spark(tdef.schema)))
            .comment(tdef.comment)
        )
        if tdef.partition_by:
            builder = builder.partitionedBy(*tdef.partition_by)
        builder.execute()

    # Two jobs starting on an empty warehouse race to create the table: the loser sees the winner's
    # half-written _delta_log as "a non-empty location that is not a Delta table" until commit 0 lands.
    with_retries(create, also=("DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION",))
    return path


def conform(df: DataFrame, name: str) -> DataFrame:
    """Select and cast ``df``'s columns to the table's schema, in order (extra columns dropped)."""
    from pyspark.sql import functions as F

    schema = to_spark(TABLES[name].schema)
    missing = [f.name for f in schema.fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"cannot write {name}: missing columns {missing}")
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def replace_day(df: DataFrame, conf: dict[str, Any], name: str, dt: str, *, meta: dict[str, Any] | None = None) -> None:
    """Atomically replace partition ``dt`` of table ``name`` with ``df``'s rows (replaceWhere).

    The commit's ``userMetadata`` is ``meta`` (JSON: the run's job, day and run id; default: job ``vtag``, no run);
    :mod:`vtag.jobs.pipeline.publish` reads it back to find a run's commits.
    """
    date.fromisoformat(dt)  # refuse anything but YYYY-MM-DD before it reaches a predicate
    path = table_path(conf, name)
    out = conform(df, name)
    meta = meta or {"job": "vtag", "dt": dt, "run_id": None}
    with_retries(
        lambda: out.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"dt = DATE'{dt}'")
        # a table created before a column was added (video_tags_quarantine.detail) gains it here
        .option("mergeSchema", "true")
        .option("userMetadata", json.dumps(meta))
        .save(path)
    )


def append_run(spark: SparkSession, conf: dict[str, Any], row: dict[str, Any]) -> None:
    """Append one ``tag_runs`` row (missing fields are null)."""
    ensure_table(spark, conf, "tag_runs")
    schema = to_spark(TAG_RUNS_SCHEMA)
    values = []
    for f in schema.fields:
        v = row.get(f.name)
        if f.name == "dt" and isinstance(v, str):
            v = date.fromisoformat(v)
        values.append(v)
    df = spark.createDataFrame([tuple(values)], schema)
    with_retries(lambda: df.write.format("delta").mode("append").save(table_path(conf, "tag_runs")))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
