"""What publishing a day reads and records, shared by the run (:mod:`vtag.jobs.pipeline.publish`) and
its recovery (:mod:`vtag.jobs.pipeline.publish_recovery`): the commit order of a day's tables and
the run statuses; the tables' Delta history (:func:`table_version`, :func:`commits_since` ->
:class:`Commit`), a day's rows at a version (:func:`day_rows`) and putting them back
(:func:`restore_day`); the ``tag_runs`` row of a run (:func:`runs_of_day`, :func:`update_run`); a
run's staged rows (:class:`Staged`) and the check that the committed versions hold them
(:func:`own_commit`, :func:`verify_published`); what recovery did with a dead run (:class:`Recovered`).

Writes go through :func:`vtag.jobs.warehouse.tables.replace_day` as looked up here: a test that
patches the write of a publish patches ``vtag.jobs.pipeline.publish.replace_day`` (the run's
commits), one that patches a rollback patches this module's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from vtag.jobs.warehouse import log_reads
from vtag.jobs.warehouse.tables import TABLES, replace_day, table_path, with_retries

#: the commit order of a day's tables: the quarantine first, ``video_tags`` (what most readers read) last
ORDER = ("video_tags_quarantine", "video_tags")
STARTED, SUCCEEDED, FAILED, KILLED = "started", "succeeded", "failed", "killed"


class AuditError(RuntimeError):
    """The staged rows of a day fail the audit (invariant, duplicate ids): nothing was published."""


# ----------------------------------------------------------------------------------- Delta history
# Reads of a table's log and of a day's row count go through delta-rs (milliseconds, where a Spark
# query takes up to a second or two) and fall back to Spark when delta-rs cannot read the table
# (vtag.jobs.warehouse.log_reads).
def table_version(spark: SparkSession, conf: dict[str, Any], name: str) -> int:
    from delta.tables import DeltaTable

    fast = log_reads.latest_version(conf, name)
    if fast is not None:
        return fast
    return int(DeltaTable.forPath(spark, table_path(conf, name)).history(1).first().version)


@dataclass
class Commit:
    version: int
    operation: str
    meta: dict[str, Any]


def commits_since(spark: SparkSession, conf: dict[str, Any], name: str, version: int) -> list[Commit]:
    """The commits of table ``name`` after ``version``, oldest first, with their ``userMetadata``."""
    from delta.tables import DeltaTable

    found = log_reads.commits_after(conf, name, version)
    if found is None:
        hist = DeltaTable.forPath(spark, table_path(conf, name)).history()
        found = [log_reads.LogCommit(int(h.version), str(h.operation), h.userMetadata)
                 for h in hist.where(F.col("version") > version).select("version", "operation", "userMetadata").collect()]
    out = []
    for c in found:
        try:
            meta = json.loads(c.user_metadata) if c.user_metadata else {}
        except ValueError:
            meta = {}
        out.append(Commit(c.version, c.operation, meta if isinstance(meta, dict) else {}))
    return sorted(out, key=lambda c: c.version)


def day_count(spark: SparkSession, conf: dict[str, Any], name: str, dt: str, version: int | None = None) -> int:
    """Rows of day ``dt`` in table ``name`` (at ``version``)."""
    fast = log_reads.day_count(conf, name, dt, version)
    return fast if fast is not None else day_rows(spark, conf, name, dt, version).count()


def day_rows(spark: SparkSession, conf: dict[str, Any], name: str, dt: str, version: int | None = None) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", int(version))
    return reader.load(table_path(conf, name)).where(F.col("dt") == F.lit(dt).cast("date"))


def restore_day(spark: SparkSession, conf: dict[str, Any], name: str, dt: str, version: int, meta: dict) -> None:
    """Put day ``dt`` of table ``name`` back to its rows as of ``version`` (one ``replaceWhere`` commit).

    Columns the table gained since ``version`` (``video_tags_quarantine.detail``) come back null. Other
    days are not touched, unlike ``RESTORE TABLE``.
    """
    old = day_rows(spark, conf, name, dt, version)
    missing = [f for f in conform_fields(name) if f.name not in old.columns]
    for f in missing:
        old = old.withColumn(f.name, F.lit(None).cast(f.dataType))
    replace_day(old, conf, name, dt, meta={**meta, "op": "rollback", "to_version": int(version)})


def table_schema(name: str):
    """The Spark schema of table ``name`` (:data:`vtag.jobs.warehouse.tables.TABLES`)."""
    from vtag.jobs.spark.schema import to_spark

    return to_spark(TABLES[name].schema)


def conform_fields(name: str):
    return table_schema(name).fields


# ----------------------------------------------------------------------------------- tag_runs
def runs_of_day(spark: SparkSession, conf: dict[str, Any], dt: str) -> list[dict[str, Any]]:
    """The ``tag_runs`` rows of day ``dt`` as dicts (timestamps timezone-aware, UTC)."""
    fast = log_reads.day_records(conf, "tag_runs", dt)
    if fast is not None:
        return fast
    path = table_path(conf, "tag_runs")
    rows = spark.read.format("delta").load(path).where(F.col("dt") == F.lit(dt).cast("date")).collect()
    return [{k: _utc(v) for k, v in r.asDict().items()} for r in rows]


def _utc(value: Any) -> Any:
    """Spark collects a timestamp as a naive datetime in the process's local time: make it aware, UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.astimezone(timezone.utc)
    return value


def _quiet_update_warning(spark: SparkSession) -> None:
    """Delta's UPDATE warns "Could not validate number of records due to missing statistics" on every
    ``tag_runs`` update; the row count is not what we rely on."""
    try:
        jvm = spark.sparkContext._jvm
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            "org.apache.spark.sql.delta.commands.UpdateCommand", jvm.org.apache.logging.log4j.Level.ERROR)
    except Exception:  # noqa: BLE001 - only a log level
        pass


def update_run(spark: SparkSession, conf: dict[str, Any], run_id: str, fields: dict[str, Any]) -> None:
    """Update the ``tag_runs`` row of ``run_id`` in place (Delta UPDATE; conflicts retried)."""
    from delta.tables import DeltaTable

    from vtag.jobs.spark.schema import to_spark
    from vtag.models.schema import TAG_RUNS_SCHEMA

    _quiet_update_warning(spark)
    types = {f.name: f.dataType for f in to_spark(TAG_RUNS_SCHEMA).fields}
    sets = {}
    for key, value in fields.items():
        if key == "dt" and isinstance(value, str):
            value = date.fromisoformat(value)
        sets[key] = F.lit(value).cast(types[key])
    path = table_path(conf, "tag_runs")
    with_retries(lambda: DeltaTable.forPath(spark, path).update(F.col("run_id") == F.lit(run_id), sets), attempts=8)


# ----------------------------------------------------------------------------------- staged rows, recovered runs
@dataclass
class Staged:
    """The staged rows of a day (read back from the staging Parquet) and their audited counts."""

    frames: dict[str, DataFrame]
    dirs: dict[str, str]
    counts: dict[str, int]  # table -> staged rows
    rows_tagged: int
    rows_quarantined: int  # weighted: a file-level entry counts the rows its footer gave


@dataclass
class Recovered:
    """What :func:`vtag.jobs.pipeline.publish_recovery.recover_day` did with one dead run."""

    run_id: str
    job: str
    action: str  # nothing_written | rolled_back | finished | published | superseded
    status: str
    message: str
    intent: dict[str, Any] | None = None


def own_commit(spark: SparkSession, conf: dict[str, Any], name: str, after: int, run_id: str) -> int:
    """The version of ``run_id``'s publish commit of ``name`` after version ``after``."""
    for c in reversed(commits_since(spark, conf, name, after)):
        if c.meta.get("run_id") == run_id and c.meta.get("op") in ("publish", "finish"):
            return c.version
    raise RuntimeError(f"{name}: no commit of run {run_id} after v{after}")


def verify_published(spark: SparkSession, conf: dict[str, Any], dt: str, staged: Staged, committed: dict[str, int]):
    """The committed versions hold the staged counts (read back by time travel)."""
    from vtag.jobs.pipeline.validate import quarantined_rows

    for name, version in committed.items():
        if name == "video_tags_quarantine":
            got = log_reads.quarantine_weight(conf, dt, version)
            if got is None:
                r = day_rows(spark, conf, name, dt, version).agg(
                    F.count(F.lit(1)).alias("n"), F.sum(quarantined_rows()).alias("w")).first()
                got = (int(r.n), int(r.w or 0))
            want = (staged.counts[name], staged.rows_quarantined)
        else:
            got, want = day_count(spark, conf, name, dt, version), staged.counts[name]
        if got != want:
            raise AuditError(f"{dt}: {name} v{version} holds {got} rows of the day, the run staged {want}")
