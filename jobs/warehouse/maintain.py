"""``vtag maintain``: OPTIMIZE (optionally Z-ORDER) and VACUUM one tag table.

``--optimize`` compacts small files (each nightly run adds a few per day); ``--zorder leaf_id``
also clusters rows by the given columns inside each ``dt`` partition, so that per-leaf queries skip
files. ``--where "dt >= '2024-06-01'"`` restricts it to partitions. ``--vacuum HOURS`` deletes files
no longer referenced by versions younger than HOURS: time travel (``VERSION AS OF``) to older versions
stops working. Below Delta's 168 hours (7 days) it is refused unless ``--force``, which turns Delta's
own retention check off for that one call (``spark.databricks.delta.retentionDurationCheck.enabled``),
restoring the previous setting afterwards. ``--keep-history DAYS`` sets the table's
``delta.deletedFileRetentionDuration`` and ``delta.logRetentionDuration``: how far back time travel
may go (Delta refuses beyond it; 7 days by default), e.g. to compare with the tags from before a
taxonomy change a quarter later.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from vtag.jobs.config import add_job_conf_args

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

MIN_RETENTION_HOURS = 168
TABLES = ("video_tags", "video_tags_quarantine", "tag_runs", "uploader_profiles")
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


class MaintenanceError(ValueError):
    """The request is refused or inconsistent (the message says why and what to do)."""


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", required=True, choices=TABLES, help="the table to maintain")
    p.add_argument("--optimize", action="store_true", help="compact small files (OPTIMIZE)")
    p.add_argument("--zorder", nargs="+", metavar="COLUMN", help="with --optimize: Z-ORDER BY these columns")
    p.add_argument("--where", help="with --optimize: a predicate on partition columns, e.g. \"dt >= '2024-06-01'\"")
    p.add_argument("--vacuum", type=float, metavar="HOURS", help="delete unreferenced files older than HOURS")
    p.add_argument("--force", action="store_true", help=f"allow --vacuum below {MIN_RETENTION_HOURS} hours")
    p.add_argument("--dry-run", action="store_true", help="with --vacuum: list what would be deleted, delete nothing")
    p.add_argument("--keep-history", type=int, metavar="DAYS", help="keep DAYS of versions for time travel (table property)")
    add_job_conf_args(p)
    p.add_argument("--json", action="store_true", help="print what was done as one JSON object on stdout")
    return p


def check_request(
    table: str,
    optimize: bool,
    zorder: list[str] | None,
    where: str | None,
    vacuum_hours: float | None,
    force: bool,
    keep_history_days: int | None = None,
) -> None:
    """Refuse inconsistent or dangerous requests before any Spark work."""
    from vtag.jobs.warehouse.catalog import PARTITION_COLUMNS, SCHEMAS

    if table not in TABLES:
        raise MaintenanceError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    if (zorder or where) and not optimize:
        raise MaintenanceError("--zorder and --where go with --optimize")
    if not optimize and vacuum_hours is None and keep_history_days is None:
        raise MaintenanceError("nothing to do: pass --optimize, --vacuum HOURS and/or --keep-history DAYS")
    if keep_history_days is not None and not 1 <= keep_history_days <= 3650:
        raise MaintenanceError("--keep-history DAYS must be between 1 and 3650")
    if keep_history_days is not None and vacuum_hours is not None and vacuum_hours < 24 * keep_history_days and not force:
        raise MaintenanceError(
            f"--vacuum {vacuum_hours:g} hours would delete history that --keep-history {keep_history_days} days keeps"
        )
    for col in zorder or ():
        if col not in SCHEMAS[table].names:
            raise MaintenanceError(f"--zorder {col!r}: {table} has no such column")
        if col in PARTITION_COLUMNS[table]:
            raise MaintenanceError(f"--zorder {col!r}: a partition column is already clustered; pick another")
    if vacuum_hours is not None:
        if vacuum_hours < 0 or vacuum_hours != vacuum_hours:
            raise MaintenanceError("--vacuum HOURS must be a non-negative number")
        if vacuum_hours < MIN_RETENTION_HOURS and not force:
            raise MaintenanceError(
                f"refusing to vacuum {table} with a retention of {vacuum_hours:g} hours (< {MIN_RETENTION_HOURS}): "
                "running jobs and time travel to older versions could lose their files; pass --force to do it anyway"
            )


def optimize_table(spark: SparkSession, path: str, zorder: list[str] | None = None, where: str | None = None) -> dict:
    """OPTIMIZE (and Z-ORDER) the Delta table at ``path``; returns Delta's metrics."""
    from delta.tables import DeltaTable

    from vtag.jobs.warehouse.tables import with_retries

    def run():
        builder = DeltaTable.forPath(spark, path).optimize()
        if where:
            builder = builder.where(where)
        return builder.executeZOrderBy(*zorder) if zorder else builder.executeCompaction()

    row = with_retries(run).collect()[0]
    m = row["metrics"].asDict(recursive=True)
    return {k: m.get(k) for k in ("numFilesAdded", "numFilesRemoved", "totalConsideredFiles", "partitionsOptimized")}


def keep_history(spark: SparkSession, path: str, days: int) -> dict:
    """Set how long the table keeps removed files and log entries (time travel reach)."""
    from vtag.jobs.warehouse.tables import with_retries

    quoted = path.replace("`", "``")
    props = {"delta.deletedFileRetentionDuration": f"interval {days} days", "delta.logRetentionDuration": f"interval {days} days"}
    current = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{quoted}`").collect()}
    if all(current.get(k) == v for k, v in props.items()):
        return props
    pairs = ", ".join(f"'{k}' = '{v}'" for k, v in props.items())
    with_retries(lambda: spark.sql(f"ALTER TABLE delta.`{quoted}` SET TBLPROPERTIES ({pairs})"))
    return props


@contextmanager
def session_confs(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Set Spark SQL confs for the body only; the previous values (or their absence) come back after."""
    previous = {k: spark.conf.get(k, None) for k in settings}
    for k, v in settings.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in previous.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def vacuum_table(
    spark: SparkSession,
    path: str,
    hours: float,
    force: bool = False,
    dry_run: bool = False,
    listing_parallelism: int | None = None,
) -> int:
    """VACUUM the table at ``path`` keeping ``hours`` of history; returns how many files it deleted
    (with ``dry_run``: would delete).

    Delta lists the table's directories with ``spark.sql.sources.parallelPartitionDiscovery.parallelism``
    tasks, 10000 by default: minutes of empty tasks on a small machine. Unless the session tuned it,
    the call uses ``listing_parallelism`` (default: 4 x the default parallelism) instead.
    """
    if hours < MIN_RETENTION_HOURS and not force:
        raise MaintenanceError(f"vacuum below {MIN_RETENTION_HOURS} hours needs force")
    quoted = path.replace("`", "``")
    settings: dict[str, str] = {}
    if hours < MIN_RETENTION_HOURS:
        settings[RETENTION_CHECK] = "false"
    if spark.conf.get(LISTING_PARALLELISM, "10000") == "10000":
        n = listing_parallelism or 4 * spark.sparkContext.defaultParallelism
        settings[LISTING_PARALLELISM] = str(max(1, int(n)))
    with session_confs(spark, settings):
        if dry_run:
            return len(spark.sql(f"VACUUM delta.`{quoted}` RETAIN {hours:g} HOURS DRY RUN").collect())
        spark.sql(f"VACUUM delta.`{quoted}` RETAIN {hours:g} HOURS").collect()
    last = spark.sql(f"DESCRIBE HISTORY delta.`{quoted}` LIMIT 1").collect()[0]
    metrics = last["operationMetrics"] or {}
    return int(metrics.get("numDeletedFiles", 0)) if last["operation"] == "VACUUM END" else 0


def maintain(
    spark: SparkSession,
    conf: dict[str, Any],
    table: str,
    optimize: bool = False,
    zorder: list[str] | None = None,
    where: str | None = None,
    vacuum_hours: float | None = None,
    force: bool = False,
    dry_run: bool = False,
    keep_history_days: int | None = None,
) -> dict:
    """Check the request, then set the history to keep, optimize and/or vacuum ``table``."""
    from delta.tables import DeltaTable

    from vtag.jobs.warehouse.tables import table_path

    check_request(table, optimize, zorder, where, vacuum_hours, force, keep_history_days)
    path = table_path(conf, table)
    if not DeltaTable.isDeltaTable(spark, path):
        raise MaintenanceError(f"no Delta table at {path}")
    out: dict[str, Any] = {"table": table, "path": path}
    if keep_history_days is not None:
        out["keep_history"] = keep_history(spark, path, keep_history_days)
    if optimize:
        out["optimize"] = optimize_table(spark, path, zorder, where)
    if vacuum_hours is not None:
        listing = conf.get("vacuum_listing_parallelism")
        files = vacuum_table(spark, path, vacuum_hours, force, dry_run, int(listing) if listing else None)
        out["vacuum"] = {"retain_hours": vacuum_hours, "dry_run": dry_run, "files": files}
    return out


def main(args: argparse.Namespace) -> int:
    from vtag.jobs.config import ConfigError, conf_from_args
    from vtag.jobs.spark.session import build_session

    try:
        check_request(args.table, args.optimize, args.zorder, args.where, args.vacuum, args.force, args.keep_history)
        conf = conf_from_args(args)
    except (MaintenanceError, ConfigError) as exc:
        print(f"vtag maintain: {exc}", file=sys.stderr)
        return 2
    spark = build_session(conf)
    try:
        out = maintain(spark, conf, args.table, args.optimize, args.zorder, args.where, args.vacuum, args.force,
                       args.dry_run, args.keep_history)
    except MaintenanceError as exc:
        print(f"vtag maintain: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        import json

        print(json.dumps(out, default=str, sort_keys=True))
        return 0
    if "keep_history" in out:
        print(f"{args.table}: keeps {args.keep_history} days of history (time travel, vacuum)")
    if "optimize" in out:
        m = out["optimize"]
        print(f"{args.table}: optimize: {m['numFilesRemoved']} files -> {m['numFilesAdded']} "
              f"({m['partitionsOptimized']} partitions)")
    if "vacuum" in out:
        v = out["vacuum"]
        verb = "would delete" if v["dry_run"] else "deleted"
        print(f"{args.table}: vacuum (retain {v['retain_hours']:g} h): {verb} {v['files']} files")
    return 0
