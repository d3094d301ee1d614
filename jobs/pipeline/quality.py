"""``vtag quality``: the quality gate of a tagged day (or of a range of days), as a job.

For each day it reads the day's latest run of ``--job`` (default ``tag``) from ``tag_runs`` and the
day's partitions of ``video_tags`` and ``video_tags_quarantine``, and checks:

- ``run``: a run is recorded for the day;
- ``status``: that run ``succeeded``;
- ``invariant``: rows read = rows in ``video_tags`` + rows in ``video_tags_quarantine`` (the tables
  as they are now, not the counts the run wrote down; a file-level quarantine entry counts the rows
  its footer gave, :func:`vtag.jobs.pipeline.validate.quarantined_rows`);
- ``run_counts``: the tables hold the counts the run recorded (nothing deleted or added since);
- ``unique``: no ``video_id`` twice in the day;
- ``written_by_run``: every ``video_tags`` row of the day carries the run's ``run_id`` (skipped when a
  later run of another job, e.g. a re-tag, rewrote the day);
- ``min_rows``: the run read at least ``--min-rows`` rows;
- ``quarantine_rate``: rows quarantined / rows read <= ``--max-quarantine-rate``;
- ``drift``: the Jensen-Shannon divergence (base 2, in [0, 1]) between the day's level-1
  distribution and the previous day's is <= ``--max-drift`` (skipped without a previous day);
- ``taxonomy`` (with ``--expect-taxonomy FILE``): every row of the day is at that taxonomy version.

Exit status: 0 when every check passes, 1 when one fails (each failure on stderr, one line each,
``vtag quality: FAILED <dt> <check>: <why>``), 2 for bad arguments. ``--json`` prints the whole
report on stdout. Only pyspark and Delta are used: no torch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any, Iterable, Mapping

from vtag.jobs.config import add_job_conf_args, day_range

DEFAULT_MAX_QUARANTINE_RATE = 0.05
DEFAULT_MAX_DRIFT = 0.1
MAX_DAYS = 3660
NO_LEVEL1 = "<none>"


@dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped
    detail: str
    value: float | None = None
    threshold: float | None = None


@dataclass
class DayReport:
    dt: str
    run_id: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def as_dict(self) -> dict[str, Any]:
        return {"dt": self.dt, "run_id": self.run_id, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def js_divergence(p: Mapping[Any, float], q: Mapping[Any, float]) -> float:
    """Jensen–Shannon divergence (base 2, so in [0, 1]) of two count or probability mappings over any
    keys (a key missing on one side counts 0 there; negative counts count 0): the square of
    :func:`scipy.spatial.distance.jensenshannon`, which returns the distance (its square root). The
    drift check of the gate and the report's drift use this one function.

    Parameters
    ----------
    p, q
        Counts (or probabilities) per key; each needs a positive total.

    Raises
    ------
    ValueError
        A side without mass.
    """
    import numpy as np
    from scipy.spatial.distance import jensenshannon

    keys = list(dict.fromkeys([*p, *q]))
    a = np.array([max(0.0, float(p.get(k, 0))) for k in keys], dtype=np.float64)
    b = np.array([max(0.0, float(q.get(k, 0))) for k in keys], dtype=np.float64)
    if not a.sum() > 0 or not b.sum() > 0:
        raise ValueError("js_divergence needs two non-empty distributions")
    distance = float(jensenshannon(a, b, base=2))
    if math.isnan(distance):  # a rounding-negative divergence of (almost) equal distributions
        return 0.0
    return max(0.0, min(1.0, distance * distance))


def _is_delta(spark, path: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def check_days(
    spark,
    conf: dict[str, Any],
    days: Iterable[str],
    *,
    job: str = "tag",
    max_quarantine_rate: float | None = DEFAULT_MAX_QUARANTINE_RATE,
    max_drift: float | None = DEFAULT_MAX_DRIFT,
    min_rows: int = 1,
    expect_taxonomy_version: str | None = None,
) -> list[DayReport]:
    """Run the gate's checks on each day (``YYYY-MM-DD``); ``None`` thresholds skip their check."""
    from pyspark.sql import functions as F

    from vtag.jobs.warehouse.tables import table_path

    days = sorted({date.fromisoformat(d).isoformat() for d in days})
    if not days:
        return []
    as_dates = [date.fromisoformat(d) for d in days]
    prev_dates = {d - timedelta(days=1) for d in as_dates}
    all_dates = sorted(set(as_dates) | prev_dates) if max_drift is not None else as_dates

    runs_path = table_path(conf, "tag_runs")
    tags_path = table_path(conf, "video_tags")
    quar_path = table_path(conf, "video_tags_quarantine")

    # tag_runs: small; the day's rows come to the driver
    latest_job: dict[str, dict] = {}
    latest_any: dict[str, dict] = {}
    runs_missing = not _is_delta(spark, runs_path)
    if not runs_missing:
        rows = (
            spark.read.format("delta")
            .load(runs_path)
            .where(F.col("dt").isin(as_dates))
            .select("run_id", "job", "dt", "status", "message", "rows_read", "rows_tagged", "rows_quarantined",
                    "started_at", "finished_at", "taxonomy_version", "model_version")
            .collect()
        )
        for r in rows:
            d = r["dt"].isoformat()
            key = (r["started_at"] or r["finished_at"], r["finished_at"] or r["started_at"])

            def newer(cur: dict | None, key=key) -> bool:
                return cur is None or key > cur["_key"]

            rec = {**r.asDict(), "_key": key}
            if newer(latest_any.get(d)):
                latest_any[d] = rec
            if (job == "any" or r["job"] == job) and newer(latest_job.get(d)):
                latest_job[d] = rec

    tag_stats: dict[str, dict] = {}
    level1: dict[str, dict[str, int]] = {}
    if _is_delta(spark, tags_path):
        tags = spark.read.format("delta").load(tags_path)
        agg = [
            F.count(F.lit(1)).alias("n"),
            F.countDistinct("video_id").alias("n_ids"),
            F.slice(F.collect_set("run_id"), 1, 20).alias("run_ids"),
        ]
        if expect_taxonomy_version is not None:
            agg.append(
                F.sum(F.when(F.col("taxonomy_version").eqNullSafe(F.lit(expect_taxonomy_version)), 0).otherwise(1))
                .alias("n_off_version")
            )
            agg.append(F.slice(F.collect_set("taxonomy_version"), 1, 10).alias("versions"))
        for r in tags.where(F.col("dt").isin(as_dates)).groupBy("dt").agg(*agg).collect():
            tag_stats[r["dt"].isoformat()] = r.asDict()
        if max_drift is not None:
            dist = (
                tags.where(F.col("dt").isin(all_dates))
                .groupBy("dt", F.coalesce(F.col("level1"), F.lit(NO_LEVEL1)).alias("l1"))
                .count()
                .collect()
            )
            for r in dist:
                level1.setdefault(r["dt"].isoformat(), {})[r["l1"]] = int(r["count"])
    quar_counts: dict[str, int] = {}
    if _is_delta(spark, quar_path):
        from vtag.jobs.pipeline.validate import quarantined_rows

        # a file-level entry (unreadable_file, schema_mismatch) stands for the rows its footer gave
        for r in (
            spark.read.format("delta").load(quar_path).where(F.col("dt").isin(as_dates)).groupBy("dt")
            .agg(F.sum(quarantined_rows()).alias("n")).collect()
        ):
            quar_counts[r["dt"].isoformat()] = int(r["n"] or 0)

    reports = []
    for d in days:
        rep = DayReport(dt=d)
        reports.append(rep)
        add = rep.checks.append
        run = latest_job.get(d)
        if run is None:
            where = f"no tag_runs table at {runs_path}" if runs_missing else f"no `{job}` run in tag_runs for {d}"
            add(Check("run", False, f"{where}: the day was never tagged, or the run died before recording itself"))
            continue
        rep.run_id = run["run_id"]
        add(Check("run", True, f"latest `{run['job']}` run {run['run_id']} (started {run['started_at']})"))
        if run["status"] == "started":
            add(Check("status", False, f"run {run['run_id']} is still running, or was killed: `vtag tag --date {d} "
                      "--repair` finishes or records it"))
            continue
        if run["status"] != "succeeded":
            add(Check("status", False, f"run {run['run_id']} ended {run['status']!r}: {run['message'] or 'no message'}"))
            continue
        add(Check("status", True, "succeeded"))

        stats = tag_stats.get(d, {})
        n_tags, n_quar = int(stats.get("n") or 0), quar_counts.get(d, 0)
        read = run["rows_read"]
        rec_tagged, rec_quar = run["rows_tagged"], run["rows_quarantined"]
        if read is None:
            add(Check("invariant", False, f"run {run['run_id']} recorded no rows_read"))
        elif read != n_tags + n_quar:
            add(Check("invariant", False,
                      f"rows read {read} != {n_tags} rows in video_tags + {n_quar} rows in video_tags_quarantine "
                      f"(= {n_tags + n_quar}, {n_tags + n_quar - read:+d})"))
        else:
            add(Check("invariant", True, f"rows read {read} = {n_tags} tagged + {n_quar} quarantined"))
        if (rec_tagged, rec_quar) != (n_tags, n_quar):
            add(Check("run_counts", False,
                      f"run {run['run_id']} recorded {rec_tagged} tagged + {rec_quar} quarantined, the tables hold "
                      f"{n_tags} + {n_quar}: the partition changed after the run"))
        else:
            add(Check("run_counts", True, "the tables hold the counts the run recorded"))
        dups = n_tags - int(stats.get("n_ids") or 0)
        add(Check("unique", dups == 0, f"{dups} rows repeat a video_id" if dups else "every video_id once"))

        latest = latest_any.get(d)
        run_ids = set(stats.get("run_ids") or [])
        if latest is not None and latest["run_id"] != run["run_id"]:
            add(Check("written_by_run", None, f"skipped: a later `{latest['job']}` run {latest['run_id']} rewrote the day"))
        elif run_ids - {run["run_id"]}:
            other = sorted(run_ids - {run["run_id"]})
            add(Check("written_by_run", False, f"video_tags rows of {d} carry other run ids than {run['run_id']}: {other[:3]}"))
        else:
            add(Check("written_by_run", True, f"every row carries run id {run['run_id']}"))

        if read is not None and read < min_rows:
            add(Check("min_rows", False, f"the run read {read} rows, fewer than {min_rows}", read, min_rows))
        else:
            add(Check("min_rows", True, f"{read} rows read", read, min_rows))

        if max_quarantine_rate is not None:
            if read:
                rate = n_quar / read
                add(Check("quarantine_rate", rate <= max_quarantine_rate,
                          f"quarantine rate {rate:.4f} ({n_quar}/{read}) "
                          + ("<=" if rate <= max_quarantine_rate else "is above the threshold")
                          + f" {max_quarantine_rate}", rate, max_quarantine_rate))
            else:
                add(Check("quarantine_rate", None, "skipped: no rows read"))

        if max_drift is not None:
            prev = (date.fromisoformat(d) - timedelta(days=1)).isoformat()
            cur_dist, prev_dist = level1.get(d), level1.get(prev)
            if not cur_dist:
                add(Check("drift", None, f"skipped: no tagged rows on {d}"))
            elif not prev_dist:
                add(Check("drift", None, f"skipped: no tagged rows on the previous day {prev}"))
            else:
                js = js_divergence(cur_dist, prev_dist)
                top = sorted(cur_dist, key=lambda k: -cur_dist[k])[:3]
                shares = ", ".join(
                    f"{k} {cur_dist[k] / sum(cur_dist.values()):.0%} (was {prev_dist.get(k, 0) / sum(prev_dist.values()):.0%})"
                    for k in top
                )
                add(Check("drift", js <= max_drift,
                          f"level-1 Jensen-Shannon divergence from {prev} {js:.4f} "
                          + ("<=" if js <= max_drift else "is above the threshold")
                          + f" {max_drift}; top level-1: {shares}", js, max_drift))

        if expect_taxonomy_version is not None:
            off = int(stats.get("n_off_version") or 0)
            if off:
                seen = sorted(v or "null" for v in (stats.get("versions") or []))
                add(Check("taxonomy", False,
                          f"{off} of {n_tags} rows are not at taxonomy version {expect_taxonomy_version} (seen: {seen})"))
            else:
                add(Check("taxonomy", True, f"all {n_tags} rows at taxonomy version {expect_taxonomy_version}"))
    return reports


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--date", help="the day to check, YYYY-MM-DD")
    p.add_argument("--start", help="first day of a range to check (with --end)")
    p.add_argument("--end", help="last day of the range, inclusive")
    add_job_conf_args(p)
    p.add_argument("--job", default="tag", help="whose run to check in tag_runs: tag (default), retag, or any")
    p.add_argument("--max-quarantine-rate", type=float, default=DEFAULT_MAX_QUARANTINE_RATE,
                   help=f"highest allowed rows quarantined / rows read (default {DEFAULT_MAX_QUARANTINE_RATE})")
    p.add_argument("--max-drift", type=float, default=DEFAULT_MAX_DRIFT,
                   help=f"highest allowed level-1 JS divergence from the previous day, 0..1 (default {DEFAULT_MAX_DRIFT})")
    p.add_argument("--skip-drift", action="store_true", help="do not compare with the previous day")
    p.add_argument("--min-rows", type=int, default=1, help="fewest rows a day's dump may have (default 1)")
    p.add_argument("--expect-taxonomy", metavar="FILE", help="every row must be at this taxonomy file's version")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    return p


def main(args: argparse.Namespace) -> int:
    from vtag.jobs.config import ConfigError, conf_from_args

    try:
        if args.date and (args.start or args.end):
            raise ValueError("give --date or --start/--end, not both")
        if args.date:
            days = [date.fromisoformat(args.date).isoformat()]
        elif args.start and args.end:
            days = day_range(args.start, args.end, max_days=MAX_DAYS)
        else:
            raise ValueError("give --date D or --start D1 --end D2")
        if args.max_quarantine_rate < 0 or not 0 <= args.max_drift <= 1:
            raise ValueError("--max-quarantine-rate must be >= 0 and --max-drift in [0, 1]")
        version = None
        if args.expect_taxonomy:
            from vtag.hierarchy.taxonomy import Taxonomy

            version = Taxonomy.load(args.expect_taxonomy).version
        conf = conf_from_args(args)
    except (ValueError, ConfigError, OSError) as exc:
        print(f"vtag quality: {exc}", file=sys.stderr)
        return 2

    from vtag.jobs.spark.session import build_session

    spark = build_session(conf)
    reports = check_days(
        spark, conf, days, job=args.job, max_quarantine_rate=args.max_quarantine_rate,
        max_drift=None if args.skip_drift else args.max_drift, min_rows=args.min_rows,
        expect_taxonomy_version=version,
    )
    failures = [f"{r.dt} {c.name}: {c.detail}" for r in reports for c in r.failures()]
    ok = not failures
    if args.json:
        print(json.dumps({"ok": ok, "failures": failures, "days": [r.as_dict() for r in reports]},
                         ensure_ascii=False, default=str))
    else:
        for r in reports:
            print(f"{r.dt}: {'ok' if r.ok else 'FAILED'} (run {r.run_id or '-'})")
            for c in r.checks:
                mark = {True: "ok  ", False: "FAIL", None: "skip"}[c.ok]
                print(f"  {mark} {c.name}: {c.detail}")
    for line in failures:
        print(f"vtag quality: FAILED {line}", file=sys.stderr)
    return 0 if ok else 1
