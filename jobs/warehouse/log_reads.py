"""Spark-free reads of the warehouse's Delta tables (delta-rs), for the publish's bookkeeping.

Publishing a day reads the tables' logs a dozen times (versions, commit history, the day's
``tag_runs`` rows, the row counts of the versions it committed). Through Spark each read is a query
plan and a job, 0.2-1.5 s on a warm local session; through delta-rs (the ``deltalake`` package, as
``vtag query`` reads) it is a few milliseconds, since only the log and Parquet footers are read.

Every function returns None when delta-rs cannot read the table (a table feature it lacks, an object
store it has no credentials for: ``storage_options`` in the job conf); the caller then reads through
Spark, which wrote the table. The first such fallback per table is reported on stderr. Writes always
go through Spark.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import date
from typing import Any

from vtag.jobs.progress import one_line
from vtag.jobs.spark.session import warehouse_path as table_path
from vtag.jobs.warehouse.reasons import FILE_REASONS

#: tables whose delta-rs read failed once: reported once per process
_reported: set[str] = set()


def delta_uri(path: str) -> str:
    """A table path as delta-rs takes it (``s3a://`` -> ``s3://``, ``file:`` dropped)."""
    if path.startswith("s3a://"):
        return "s3://" + path[len("s3a://"):]
    return path.removeprefix("file:")


def storage_options(conf: dict[str, Any]) -> dict[str, str] | None:
    """The job conf's ``storage_options`` as delta-rs takes them (None: none given)."""
    opts = {str(k): str(v) for k, v in (conf.get("storage_options") or {}).items()}
    return opts or None


def open_table(conf: dict[str, Any], name: str, version: int | None = None):
    """``deltalake.DeltaTable`` of warehouse table ``name`` (at ``version``); None when delta-rs cannot
    read it (reported once on stderr, the caller falls back to Spark).

    Parameters
    ----------
    conf
        The job conf (``warehouse``, ``storage_options``).
    name
        A table of :data:`vtag.jobs.warehouse.tables.TABLES`.
    version
        A table version to time-travel to (None: the latest).
    """
    try:
        from deltalake import DeltaTable

        uri = delta_uri(table_path(conf, name))
        return DeltaTable(uri, version=version, storage_options=storage_options(conf))
    except Exception as exc:  # noqa: BLE001 - any failure means "read through Spark instead"
        if name not in _reported:
            _reported.add(name)
            print(f"vtag: note: delta-rs cannot read table {name} ({type(exc).__name__}: {one_line(exc)[:200]}); "
                  "reading it through Spark", file=sys.stderr)
        return None


def is_table(conf: dict[str, Any], name: str) -> bool:
    """Whether delta-rs sees a Delta table ``name`` in the warehouse (False also when it cannot tell)."""
    try:
        from deltalake import DeltaTable

        return bool(DeltaTable.is_deltatable(delta_uri(table_path(conf, name)), storage_options=storage_options(conf)))
    except Exception:  # noqa: BLE001 - the caller asks Spark
        return False


def latest_version(conf: dict[str, Any], name: str) -> int | None:
    """The latest version of table ``name`` (None: delta-rs cannot read it)."""
    table = open_table(conf, name)
    return None if table is None else int(table.version())


@dataclass
class LogCommit:
    """One commit of a table's log: its version, operation and ``userMetadata`` (a JSON string or None)."""

    version: int
    operation: str
    user_metadata: str | None


def commits_after(conf: dict[str, Any], name: str, version: int) -> list[LogCommit] | None:
    """The commits of table ``name`` after ``version``, oldest first (None: delta-rs cannot read it)."""
    table = open_table(conf, name)
    if table is None:
        return None
    newer = int(table.version()) - int(version)
    if newer <= 0:
        return []
    out = [LogCommit(int(h["version"]), str(h.get("operation")), h.get("userMetadata"))
           for h in table.history(limit=newer) if int(h["version"]) > version]
    return sorted(out, key=lambda c: c.version)


def _day_dataset(conf: dict[str, Any], name: str, dt: str, version: int | None):
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = open_table(conf, name, version)
    if table is None:
        return None, None
    if "dt" in table.metadata().partition_columns:  # only the day's files
        try:
            dataset = table.to_pyarrow_dataset(file_pruning_predicate=[("dt", "=", dt)])
        except TypeError:  # deltalake before file_pruning_predicate (setup.cfg allows >= 1.1)
            dataset = table.to_pyarrow_dataset(partitions=[("dt", "=", dt)])
    else:
        dataset = table.to_pyarrow_dataset()
    return dataset, ds.field("dt") == pc.scalar(date.fromisoformat(dt))


def day_count(conf: dict[str, Any], name: str, dt: str, version: int | None = None) -> int | None:
    """Rows of day ``dt`` in table ``name`` (at ``version``); None: delta-rs cannot read it."""
    dataset, where = _day_dataset(conf, name, dt, version)
    return None if dataset is None else int(dataset.count_rows(filter=where))


def day_records(conf: dict[str, Any], name: str, dt: str) -> list[dict[str, Any]] | None:
    """The rows of day ``dt`` in table ``name`` as dicts (timestamps timezone-aware, UTC); None:
    delta-rs cannot read it. For small days (``tag_runs``): every row is read into memory."""
    dataset, where = _day_dataset(conf, name, dt, None)
    if dataset is None:
        return None
    return dataset.to_table(filter=where).to_pylist()


def quarantine_weight(conf: dict[str, Any], dt: str, version: int | None = None) -> tuple[int, int] | None:
    """``(entries, dump rows they stand for)`` of day ``dt`` in ``video_tags_quarantine``, as
    :func:`vtag.jobs.pipeline.validate.quarantined_rows` counts them: 1 per row entry, the footer's row
    count (``raw``'s ``rows``, 0 when absent) per file entry (``reason`` in
    :data:`vtag.jobs.warehouse.reasons.FILE_REASONS`). None: delta-rs cannot read the table."""
    import pyarrow.dataset as ds

    dataset, where = _day_dataset(conf, "video_tags_quarantine", dt, version)
    if dataset is None:
        return None
    n = int(dataset.count_rows(filter=where))
    files = dataset.to_table(columns=["raw"], filter=where & ds.field("reason").isin(list(FILE_REASONS)))
    raws = files.column("raw").to_pylist()
    return n, n - len(raws) + sum(_footer_rows(r) for r in raws)


def _footer_rows(raw: str | None) -> int:
    """``raw``'s ``rows`` as a whole number; 0 when absent or null, as Spark's ``get_json_object`` gives
    null there. The job writes ``rows`` as a number or not at all; anything else also counts 0 here
    (Spark's ANSI cast would raise)."""
    try:
        value = json.loads(raw).get("rows") if raw else None
    except (ValueError, AttributeError):
        return 0
    if isinstance(value, bool) or value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
