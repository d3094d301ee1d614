"""``vtag retag``: bring tag partitions from one taxonomy version to the next.

* ``plan``: from the diff of the two taxonomies and the rows of ``video_tags`` in the range, count
  per day the rows that can be **remapped** without the model and those that need **re-inference**
  (rules in :mod:`vtag.hierarchy.migrate`), with an estimated cost.
* ``run``: remap rows in Spark by the migration map (new names, paths, levels, ``taxonomy_version``);
  re-infer the others with a bundle trained on the new taxonomy, from the day's dump, through the
  same tagging chain as ``vtag tag`` (:func:`vtag.jobs.pipeline.day.tag_rows`); replace each day atomically (``replaceWhere``); one
  ``tag_runs`` row per day. Days already at the target version are skipped, so an interrupted run
  resumes where it stopped. ``--dry-run`` writes nothing.
* ``history``: the table versions that touched a day, with their taxonomy and model versions; the
  versions before a re-tag stay readable by Delta time travel (``versionAsOf``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from vtag.jobs import progress
from vtag.jobs.config import add_job_conf_args, conf_from_args, day_range

RETAG_SCHEMA_EXTRA = [pa.field("_action", pa.string()), pa.field("_why", pa.string())]

#: The plan's cost model, per day: ``remap / retag_remap_rows_per_s`` plus, on a day with rows to
#: re-infer, ``retag_reinfer_day_overhead_s + reinfer / retag_reinfer_rows_per_s`` (job conf keys; these
#: are the fallbacks). Measured by ``bench/retag_speed.py`` (bench/results/retag.md: 100k rows, 2 cores,
#: local[2]): remap-only 2,102 rows/s (classification, remap and write of the day); the model 242
#: rows/s (a whole day through ``vtag tag`` with the v2 bundle); re-inferring ~850 rows of a day cost
#: ~14.5 s warm, i.e. ~11 s of reading and validating the day's dump beside 3.5 s of model time.
REMAP_ROWS_PER_S_DEFAULT = 2100.0
REINFER_ROWS_PER_S_DEFAULT = 240.0
REINFER_DAY_OVERHEAD_S_DEFAULT = 11.0


class RetagError(RuntimeError):
    """A re-tag request that cannot be carried out as asked (the message says why)."""


@dataclass
class DayPlan:
    dt: str
    rows: int
    at_target: int
    remap: int
    reinfer: int
    est_seconds: float


@dataclass
class DayResult:
    dt: str
    status: str  # succeeded | skipped | dry-run
    rows_before: int
    rows_after: int
    remapped: int
    reinferred: int
    at_target: int
    seconds: float
    run_id: str | None
    #: stage timings of a written day (0 otherwise): ``classify_seconds`` = the migration rules over every
    #: row of the day (the remap itself); ``reinfer_seconds`` = reading the day's dump, validating and
    #: predicting the rows to re-infer (materialized once); ``write_seconds`` = the ``replaceWhere``
    #: write and its checks. ``vtag retag plan``'s cost constants come from these (bench/retag_speed.py).
    classify_seconds: float = 0.0
    reinfer_seconds: float = 0.0
    write_seconds: float = 0.0


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)

    def common(sp: argparse.ArgumentParser, with_range: bool = True) -> None:
        if with_range:
            sp.add_argument("--from", dest="from_taxonomy", required=True, help="taxonomy the rows are at now")
            sp.add_argument("--to", dest="to_taxonomy", required=True, help="target taxonomy")
            sp.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
            sp.add_argument("--end", required=True, help="last day, YYYY-MM-DD (inclusive)")
        add_job_conf_args(sp)
        sp.add_argument("--json", action="store_true", help="print JSON")

    common(sub.add_parser("plan", help="count rows to remap and to re-infer per day"))
    run = sub.add_parser("run", help="re-tag the range")
    common(run)
    run.add_argument("--bundle", required=True, help="a bundle trained on the target taxonomy")
    run.add_argument("--dump-root", help="dump root for re-inference (default: job conf dump_root)")
    run.add_argument("--dry-run", action="store_true", help="plan and check everything, write nothing")
    hist = sub.add_parser("history", help="table versions that touched a day")
    common(hist, with_range=False)
    hist.add_argument("--date", required=True, help="the day, YYYY-MM-DD")
    return p


def _load_pair(from_path: str, to_path: str):
    from vtag.hierarchy.taxonomy import Taxonomy, TaxonomyError

    old = Taxonomy.load(from_path)
    try:
        new = Taxonomy.load(to_path)
    except TaxonomyError as exc:
        raise RetagError(f"the target taxonomy is invalid: {exc}") from exc
    if old.version == new.version:
        raise RetagError(f"{from_path} and {to_path} are the same version {old.version}: nothing to re-tag")
    return old, new


def _tagged_days(spark, conf, days: list[str]) -> set[str]:
    """Days of the range that a successful tag or retag run has written."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from vtag.jobs.warehouse.tables import table_path

    path = table_path(conf, "tag_runs")
    if not DeltaTable.isDeltaTable(spark, path):
        return set()
    rows = (
        spark.read.format("delta").load(path)
        .where((F.col("status") == "succeeded") & F.col("dt").isin([dt.date.fromisoformat(d) for d in days]))
        .select(F.date_format("dt", "yyyy-MM-dd").alias("d")).distinct().collect()
    )
    return {r.d for r in rows}


def _classify_fn(old_dict: dict, new_dict: dict, old_version: str, new_version: str):
    """A ``mapInArrow`` function: video_tags rows -> the same rows in the target version, with
    ``_action`` (at_target | remap | reinfer) and ``_why``; reinfer rows keep their old columns."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from vtag.hierarchy.migrate import TagRemapper
        from vtag.hierarchy.taxonomy import Taxonomy
        from vtag.models.schema import MAX_LEVELS, VIDEO_TAGS_SCHEMA

        remapper = TagRemapper(Taxonomy.from_dict(old_dict), Taxonomy.from_dict(new_dict))
        out_schema = pa.schema(list(VIDEO_TAGS_SCHEMA) + RETAG_SCHEMA_EXTRA)
        for batch in batches:
            rows = batch.to_pylist()
            for r in rows:
                version = r["taxonomy_version"]
                if version == new_version:
                    r["_action"], r["_why"] = "at_target", None
                    continue
                if version != old_version:
                    r["_action"], r["_why"] = "reinfer", f"row at taxonomy version {version}, not {old_version}"
                    continue
                tags = [(t["node_id"], float(t["score"])) for t in (r["tags"] or [])]
                new_row, why = remapper.remap(r["leaf_id"], tags)
                if new_row is None:
                    r["_action"], r["_why"] = "reinfer", why
                    continue
                r.update(
                    leaf_id=new_row.leaf_id,
                    path=new_row.path,
                    path_names=new_row.path_names,
                    score=new_row.score,
                    tags=new_row.tags,
                    taxonomy_version=new_version,
                    _action="remap",
                    _why=None,
                )
                for i in range(MAX_LEVELS):
                    r[f"level{i + 1}"] = new_row.path_names[i] if i < len(new_row.path_names) else None
            yield from pa.Table.from_pylist(rows, schema=out_schema).to_batches()

    return run


def _classified(spark, conf, old, new, days: list[str]):
    from pyspark.sql import functions as F

    from vtag.jobs.spark.schema import to_spark
    from vtag.jobs.warehouse.tables import table_path
    from vtag.models.schema import VIDEO_TAGS_SCHEMA

    tags = spark.read.format("delta").load(table_path(conf, "video_tags"))
    tags = tags.where(F.col("dt").isin([dt.date.fromisoformat(d) for d in days]))
    fn = _classify_fn(old.to_dict(), new.to_dict(), old.version, new.version)
    return tags.mapInArrow(fn, to_spark(pa.schema(list(VIDEO_TAGS_SCHEMA) + RETAG_SCHEMA_EXTRA)))


def plan(spark, conf: dict, from_path: str, to_path: str, start: str, end: str) -> list[DayPlan]:
    """Per-day counts of rows at the target, to remap and to re-infer, with an estimated cost."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from vtag.jobs.warehouse.tables import table_path

    old, new = _load_pair(from_path, to_path)
    try:
        days = day_range(start, end)
    except ValueError as exc:
        raise RetagError(str(exc)) from exc
    if not DeltaTable.isDeltaTable(spark, table_path(conf, "video_tags")):  # a plan reads; it never creates
        raise RetagError(f"no video_tags table at {table_path(conf, 'video_tags')}: nothing tagged yet")
    tagged = _tagged_days(spark, conf, days)
    progress.stage(f"classifying the rows of {len(days)} day(s) ({start} .. {end})")
    missing = [d for d in days if d not in tagged]
    if missing:
        raise RetagError(f"days not yet tagged in the range: {', '.join(missing)} (tag them first, or narrow the range)")
    counts = (
        _classified(spark, conf, old, new, days)
        .groupBy(F.date_format("dt", "yyyy-MM-dd").alias("d"))
        .pivot("_action", ["at_target", "remap", "reinfer"])
        .count()
        .collect()
    )
    by_day = {r.d: r for r in counts}
    remap_rate = float(conf.get("retag_remap_rows_per_s") or REMAP_ROWS_PER_S_DEFAULT)
    infer_rate = float(conf.get("retag_reinfer_rows_per_s") or REINFER_ROWS_PER_S_DEFAULT)
    day_overhead = conf.get("retag_reinfer_day_overhead_s")
    day_overhead = REINFER_DAY_OVERHEAD_S_DEFAULT if day_overhead is None else float(day_overhead)
    out = []
    for d in days:
        r = by_day.get(d)
        at, rm, ri = ((r["at_target"] or 0, r["remap"] or 0, r["reinfer"] or 0) if r else (0, 0, 0))
        est = rm / remap_rate + ((day_overhead + ri / infer_rate) if ri else 0.0)
        out.append(DayPlan(d, at + rm + ri, at, rm, ri, est))
    return out


def run(
    spark,
    conf: dict,
    from_path: str,
    to_path: str,
    start: str,
    end: str,
    bundle: str,
    *,
    dump_root: str | None = None,
    dry_run: bool = False,
    load_log: str | None = None,
) -> list[DayResult]:
    """Re-tag every day of the range that is not yet at the target version (see module docstring)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from vtag.jobs.pipeline.day import tag_rows, with_run_columns
    from vtag.jobs.pipeline.dumps import read_day
    from vtag.jobs.pipeline.publish import DayOutput, run_day
    from vtag.jobs.warehouse.tables import utcnow
    from vtag.models.bundle import check_bundle_taxonomy
    from vtag.models.schema import PREDICTION_SCHEMA

    old, new = _load_pair(from_path, to_path)
    bundle = str(Path(bundle).resolve())
    model_version = check_bundle_taxonomy(bundle, new.version, role="target",
                                          hint=f"(the target taxonomy: {to_path})").model_version
    dump_root = str(dump_root or conf.get("dump_root"))
    days_plan = plan(spark, conf, from_path, to_path, start, end)
    results = []
    for k, p in enumerate(days_plan, start=1):
        progress.stage(f"day {k}/{len(days_plan)}: {p.dt} (remap {p.remap:,}, re-infer {p.reinfer:,})", p.rows)
        t0 = time.time()
        if p.rows == p.at_target:
            results.append(DayResult(p.dt, "skipped", p.rows, p.rows, 0, 0, p.at_target, 0.0, None))
            continue
        if dry_run:
            results.append(DayResult(p.dt, "dry-run", p.rows, p.rows, p.remap, p.reinfer, p.at_target, 0.0, None))
            continue
        run_id = f"retag-{p.dt}-{uuid.uuid4().hex[:12]}"
        started = utcnow()
        record: dict[str, Any] = {
            "run_id": run_id, "job": "retag", "dt": p.dt, "taxonomy_version": new.version,
            "model_version": model_version, "rows_read": p.rows, "started_at": started,
            "conf": json.dumps({"from": from_path, "to": to_path, "bundle": bundle, "dump_root": dump_root}),
        }
        cached: list = []
        stage = {"classify": 0.0, "reinfer": 0.0, "write": 0.0}

        def compute(day, p=p, run_id=run_id, started=started, cached=cached, stage=stage) -> DayOutput:
            classified = _classified(spark, conf, old, new, [p.dt]).persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(classified)
            keep = classified.where(F.col("_action") != "reinfer")
            pred_cols = [f.name for f in PREDICTION_SCHEMA]
            parts = [keep.select(*pred_cols)]
            t_stage = time.time()
            n_reinfer = classified.where(F.col("_action") == "reinfer").count()  # materializes the classification
            stage["classify"] = time.time() - t_stage
            if n_reinfer:
                t_stage = time.time()
                ids = classified.where(F.col("_action") == "reinfer").select("video_id")
                # only the rows to re-infer are validated (cover decoding, duplicates): a semi join on
                # video_id keeps every dump row of those ids, so mark's per-id duplicate rule is unchanged
                day_rows = read_day(spark, dump_root, p.dt).join(ids, "video_id", "left_semi")
                inferred = tag_rows(spark, conf, day_rows, bundle, dt=p.dt, run_id=run_id, tagged_at=started,
                               taxonomy_version=new.version, dump_root=dump_root, outside_root="missing",
                               load_log=load_log)
                cached.append(inferred.marked)
                n_found = inferred.marked.where(F.col("reason").isNull()).count()
                if n_found != n_reinfer:
                    raise RetagError(
                        f"{p.dt}: {n_reinfer} rows need re-inference but the dump under {dump_root} holds "
                        f"{n_found} of them; the day was left as it was"
                    )
                preds = inferred.tagged.persist(StorageLevel.MEMORY_AND_DISK)
                cached.append(preds)
                n_pred = preds.count()  # the model runs once, here; the staging write reads the cached rows
                stage["reinfer"] = time.time() - t_stage
                if n_pred != n_reinfer:
                    raise RetagError(f"{p.dt}: {n_reinfer} rows to re-infer, the model returned {n_pred}")
                parts.append(preds.select(*pred_cols))
            out = parts[0]
            for extra in parts[1:]:
                out = out.unionByName(extra)
            out = with_run_columns(out, p.dt, run_id, started)
            stage["t_write"] = time.time()
            note = json.dumps({"remapped": p.remap, "reinferred": p.reinfer, "at_target": p.at_target,
                               "stage_seconds": {k: round(stage[k], 3) for k in ("classify", "reinfer")}})
            return DayOutput({"video_tags": out}, p.rows, [note])

        def audit(day, staged, p=p) -> list[str]:
            off = staged.frames["video_tags"].where(F.col("taxonomy_version") != new.version).count()
            return [f"{off} rows not at {new.version}"] if off else []

        try:
            day = run_day(spark, conf, job="retag", dt=p.dt, run_id=run_id, record=record, compute=compute,
                          audit=audit)
        finally:
            for frame in cached:
                frame.unpersist()
        stage["write"] = time.time() - stage.pop("t_write", time.time())
        secs = time.time() - t0
        rows_after = day.record["rows_tagged"]
        results.append(DayResult(p.dt, "succeeded", p.rows, rows_after, p.remap, p.reinfer, p.at_target, secs, run_id,
                                 stage["classify"], stage["reinfer"], stage["write"]))
    return results


def history(spark, conf: dict, date: str) -> list[dict]:
    """Versions of ``video_tags`` that wrote day ``date``, with the taxonomy/model versions they hold."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from vtag.jobs.warehouse.tables import table_path

    dt.date.fromisoformat(date)
    path = table_path(conf, "video_tags")
    if not DeltaTable.isDeltaTable(spark, path):
        raise RetagError(f"no video_tags table under {conf.get('warehouse')}")
    hist = DeltaTable.forPath(spark, path).history().orderBy("version").collect()
    out = []
    for h in hist:
        meta = {}
        if h.userMetadata:
            try:
                meta = json.loads(h.userMetadata)
            except ValueError:
                meta = {}
        predicate = (h.operationParameters or {}).get("predicate", "") or ""
        if meta.get("dt") != date and date not in predicate:
            continue
        snap = (
            spark.read.format("delta").option("versionAsOf", h.version).load(path)
            .where(F.col("dt") == F.lit(date).cast("date"))
            .groupBy("taxonomy_version", "model_version").count().collect()
        )
        out.append({
            "version": h.version,
            "timestamp": h.timestamp.isoformat() if h.timestamp else None,
            "operation": h.operation,
            "job": meta.get("job"),
            "run_id": meta.get("run_id"),
            "rows": {f"{r.taxonomy_version}/{r.model_version}": r["count"] for r in snap},
        })
    return out


def main(args: argparse.Namespace) -> int:
    from vtag.jobs.spark.session import build_session

    conf = conf_from_args(args)
    with progress.command(f"vtag retag {args.action}"):
        progress.stage("starting Spark")
        spark = build_session(conf)
        return _main(spark, conf, args)


def _main(spark, conf: dict, args: argparse.Namespace) -> int:
    try:
        if args.action == "plan":
            days = plan(spark, conf, args.from_taxonomy, args.to_taxonomy, args.start, args.end)
            _print_plan(days, args.json)
        elif args.action == "run":
            res = run(spark, conf, args.from_taxonomy, args.to_taxonomy, args.start, args.end, args.bundle,
                      dump_root=args.dump_root, dry_run=args.dry_run)
            if args.json:
                print(json.dumps([asdict(r) for r in res], ensure_ascii=False))
            else:
                for r in res:
                    print(f"{r.dt}: {r.status}: {r.rows_before} rows, remapped {r.remapped}, "
                          f"re-inferred {r.reinferred}, already at target {r.at_target} ({r.seconds:.1f}s)")
        else:
            hist = history(spark, conf, args.date)
            if args.json:
                print(json.dumps(hist, ensure_ascii=False))
            else:
                for h in hist:
                    print(f"v{h['version']:<4} {h['timestamp']}  {h['operation']:<8} {h['job'] or '':<6} "
                          f"{h['run_id'] or '':<32} " + ", ".join(f"{k}: {v}" for k, v in h["rows"].items()))
    except Exception as exc:  # the message is the user's answer; the trace is noise here
        from vtag.hierarchy.taxonomy import TaxonomyError

        if isinstance(exc, (RetagError, TaxonomyError, FileNotFoundError, ValueError)):
            print(f"vtag retag {args.action}: {exc}", file=sys.stderr)
            return 1
        raise
    return 0


def _print_plan(days: list[DayPlan], as_json: bool) -> None:
    if as_json:
        total = {k: sum(getattr(d, k) for d in days) for k in ("rows", "at_target", "remap", "reinfer", "est_seconds")}
        print(json.dumps({"days": [asdict(d) for d in days], "total": total}, ensure_ascii=False))
        return
    print(f"{'dt':<12}{'rows':>9}{'at target':>11}{'remap':>9}{'re-infer':>10}{'est. s':>9}")
    for d in days:
        print(f"{d.dt:<12}{d.rows:>9}{d.at_target:>11}{d.remap:>9}{d.reinfer:>10}{d.est_seconds:>9.1f}")
    rows = sum(d.rows for d in days)
    rm = sum(d.remap for d in days)
    ri = sum(d.reinfer for d in days)
    print(f"{'total':<12}{rows:>9}{sum(d.at_target for d in days):>11}{rm:>9}{ri:>10}"
          f"{sum(d.est_seconds for d in days):>9.1f}")
    if rows:
        print(f"re-inference avoided for {rm} of {rm + ri} rows to migrate ({rm / max(1, rm + ri):.0%})")
