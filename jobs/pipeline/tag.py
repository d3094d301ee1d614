"""``vtag tag``: tag one day of a UGC dump into the Delta tag tables.

check the day's files and read the sound ones (a bad file becomes one quarantine entry,
:mod:`vtag.jobs.pipeline.dumps`) -> normalise ``cover_uri`` against the cover root (:mod:`vtag.jobs.pipeline.covers`) ->
validate (bad rows to ``video_tags_quarantine`` with a reason code and a detail) -> read the covers
through Spark's ``binaryFile`` source -> join the uploader profiles of the days before
(``uploader_profiles``, broadcast; :mod:`vtag.jobs.pipeline.profiles`) -> ``Predictor`` in ``mapInArrow`` (loaded
once per Python worker) -> write, audit, publish both partitions of the day as one unit
(:mod:`vtag.jobs.pipeline.publish`) -> refresh ``uploader_profiles`` through the day. ``tag_runs`` holds the run's
row from its start (``started``) and its outcome. The run is ``succeeded`` only when rows read = rows
tagged + rows quarantined, every ``video_id`` is tagged once, both tables were published and the
profile refresh went through. ``vtag tag --repair`` finishes or rolls back a run killed while
publishing (:func:`vtag.jobs.pipeline.publish_recovery.repair_day`).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from vtag.jobs.config import add_job_conf_args, conf_from_args, day_range
from vtag.jobs.pipeline.covers import cover_root
from vtag.jobs.pipeline.day import tag_rows
from vtag.jobs.pipeline.dumps import read_day_checked
from vtag.jobs.pipeline.profiles import (
    bundle_taxonomy,
    profile_settings,
    profiles_for_day,
    refresh_profiles,
)
from vtag.jobs.pipeline.publish import DayOutput, DayRun, run_day
from vtag.jobs.progress import command, stage
from vtag.jobs.warehouse.tables import utcnow
from vtag.models.bundle import BundleTaxonomyMismatch, check_bundle_taxonomy, read_meta

#: the old name of :class:`vtag.models.bundle.BundleTaxonomyMismatch`, the one exception of the check
BundleMismatchError = BundleTaxonomyMismatch


@dataclass
class RunResult:
    run_id: str
    dt: str
    rows_read: int
    rows_tagged: int
    rows_quarantined: int
    seconds: float
    taxonomy_version: str
    model_version: str
    status: str
    profiles: str | None = None  # what the run joined and refreshed (also in tag_runs.message)


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--date", required=True, help="the dump day, YYYY-MM-DD (with --end: the first day)")
    p.add_argument("--end", help="last day of a backfill range, inclusive: every day in one Spark session "
                   "(one run and tag_runs row per day; a failed day is recorded and the others still run)")
    p.add_argument("--dump-root", help="dump root holding dt=YYYY-MM-DD/ (default: job conf dump_root)")
    p.add_argument("--bundle", help="model bundle directory (default: job conf bundle)")
    p.add_argument("--taxonomy", help="the job's taxonomy file; the bundle must match its version")
    p.add_argument("--allow-taxonomy-mismatch", action="store_true", help="tag with a bundle of another taxonomy version")
    add_job_conf_args(p)
    p.add_argument("--format", choices=["parquet", "jsonl"], help="dump format (default: detected)")
    p.add_argument("--allow-incomplete", action="store_true", help="tag a day without its _SUCCESS marker")
    p.add_argument("--run-id", help="run id (default: generated)")
    p.add_argument("--json", action="store_true", help="print the run result as JSON")
    p.add_argument("--repair", action="store_true",
                   help="tag nothing: finish the runs of the day(s) that were killed while publishing (from their "
                   "staged rows; the tag job's profile refresh included) and record every killed run in tag_runs")
    p.add_argument("--rollback", action="store_true",
                   help="with --repair: roll a killed run's commits back instead of finishing them")
    return p


def bundle_taxonomy_version(bundle: str) -> str:
    """The taxonomy version a bundle was trained on, from its ``config.yaml`` (the taxonomy is not parsed)."""
    return read_meta(bundle).taxonomy_version


def register_in_catalog(spark: SparkSession, conf: dict) -> None:
    """Register the tables in the metastore when the conf says ``catalog_register: true``.

    The day is already written and recorded; a metastore outage must not turn it into a failed run,
    so a failure here is logged loudly and the tables stay readable by path.
    """
    from vtag.jobs.warehouse.catalog import register_if_configured

    try:
        register_if_configured(spark, conf)
    except Exception as exc:  # noqa: BLE001 - reported, the data is safe either way
        print(f"vtag: warning: catalog registration failed ({type(exc).__name__}: {exc}); "
              "the tables are still readable by path", file=sys.stderr)


def tag_day(
    spark: SparkSession,
    conf: dict[str, Any],
    dt: str,
    *,
    dump_root: str | None = None,
    bundle: str | None = None,
    taxonomy_path: str | None = None,
    allow_taxonomy_mismatch: bool = False,
    fmt: str | None = None,
    require_success: bool = True,
    run_id: str | None = None,
    load_log: str | None = None,
    job: str = "tag",
    input_log: str | None = None,
) -> RunResult:
    """Tag day ``dt`` (YYYY-MM-DD); returns the run's counts. Raises on failure after recording it.

    The day goes through :func:`vtag.jobs.pipeline.publish.run_day` (write, audit, publish): its rows are computed
    once into staging files, audited (invariant, unique ids) and only then committed to both tables.
    ``load_log`` / ``input_log``: directories for tests (:func:`vtag.jobs.pipeline.inference.get_predictor`,
    :func:`vtag.jobs.pipeline.inference.log_input`).
    """
    from vtag.hierarchy.taxonomy import Taxonomy

    date.fromisoformat(dt)
    started = utcnow()
    dump_root = str(dump_root or conf["dump_root"])
    bundle = str(Path(bundle or conf["bundle"]).resolve())
    run_id = run_id or f"{job}-{dt}-{uuid.uuid4().hex[:12]}"
    taxonomy_path = taxonomy_path or conf.get("taxonomy")
    tax_version = Taxonomy.load(taxonomy_path).version if taxonomy_path else bundle_taxonomy_version(bundle)
    record = {
        "run_id": run_id,
        "job": job,
        "dt": dt,
        "taxonomy_version": tax_version,
        "model_version": None,
        "started_at": started,
        "conf": json.dumps(
            {"dump_root": dump_root, "bundle": bundle, "taxonomy": taxonomy_path, "spark": conf.get("spark", {})},
            ensure_ascii=False,
            default=str,
        ),
    }
    cached: list[DataFrame] = []
    profile_notes: list[str] = []
    state: dict[str, Any] = {}

    def compute(day: DayRun) -> DayOutput:
        meta = check_bundle_taxonomy(bundle, tax_version, allow=allow_taxonomy_mismatch, role="job's",
                                     hint=f"or pass --allow-taxonomy-mismatch (the job's taxonomy: {taxonomy_path})")
        day.record["model_version"] = meta.model_version
        settings = profile_settings(conf)
        joined = None
        if settings.enabled:
            # the bundle's taxonomy: the one its tags carry and its Predictor reads profiles in
            b_taxonomy = bundle_taxonomy(bundle)
            state.update(taxonomy=b_taxonomy, profiles=True)
            joined = profiles_for_day(spark, conf, dt, b_taxonomy, dump_root)
        profile_notes.append(f"profiles: {joined.describe()}" if joined else "profiles: off")

        notes: list[str] = []
        stage(f"{dt}: reading and validating the dump")
        read = read_day_checked(spark, dump_root, dt, fmt=fmt, require_success=require_success)
        for problem in read.problems:
            print(f"vtag tag: {dt}: quarantined file {problem.path}: {problem.reason} ({problem.detail})",
                  file=sys.stderr)
        out = tag_rows(spark, conf, read.frame, bundle, dt=dt, run_id=run_id, tagged_at=started,
                       taxonomy_version=tax_version, dump_root=dump_root, joined=joined,
                       allow_taxonomy_mismatch=allow_taxonomy_mismatch, load_log=load_log, input_log=input_log)
        cached.append(out.marked)
        counts = out.marked.agg(
            F.count(F.lit(1)).alias("n"),
            F.sum((F.col("reason").isNull() & F.col("_cover_problem").isNotNull()).cast("int")).alias("outside"),
        ).first()
        # a quarantined file counts the rows its footer gives (vtag.jobs.pipeline.validate.quarantined_rows)
        rows_read = int(counts.n) + read.file_rows
        stage(f"{dt}: read; inferring and writing to staging", rows_read)
        if counts.outside:
            notes.append(f"covers: {counts.outside} cover_uri relative or outside the cover root "
                         f"{cover_root(conf, dump_root)} (tagged cover_missing)")
        quarantine = out.quarantine.unionByName(read.quarantine(spark, dt, run_id))
        return DayOutput({"video_tags_quarantine": quarantine, "video_tags": out.tagged}, rows_read,
                         [*profile_notes, read.describe(), *notes])

    def after_publish(day: DayRun) -> str | None:
        stage(f"{dt}: published ({day.record.get('rows_tagged')} tagged, {day.record.get('rows_quarantined')} quarantined)")
        for frame in cached:
            frame.unpersist()
        if not state.get("profiles"):
            return None
        note = refresh_step(spark, conf, dt, state["taxonomy"], dump_root, run_id=run_id)
        profile_notes.append(note)
        return note

    try:
        day = run_day(spark, conf, job=job, dt=dt, run_id=run_id, record=record, compute=compute,
                      after_publish=after_publish)
    finally:
        for frame in cached:
            frame.unpersist()
    register_in_catalog(spark, conf)
    rec = day.record
    return RunResult(
        run_id=run_id,
        dt=dt,
        rows_read=rec["rows_read"],
        rows_tagged=rec["rows_tagged"],
        rows_quarantined=rec["rows_quarantined"],
        seconds=rec["seconds"],
        taxonomy_version=tax_version,
        model_version=rec["model_version"],
        status=rec["status"],
        profiles="; ".join(profile_notes),
    )


def refresh_step(spark: SparkSession, conf: dict[str, Any], dt: str, taxonomy, dump_root: str, *,
                 run_id: str | None = None) -> str:
    """Refresh ``uploader_profiles`` through ``dt`` after the day is published; the run's note.

    A failure here fails the run (the day's tags stay published): the next day would otherwise be
    joined with profiles that miss this day, so the retry of the run (a rerun of the day) redoes both.

    Parameters
    ----------
    spark : SparkSession
    conf : dict
        The job conf of the run.
    dt : str
        The day just tagged.
    taxonomy : Taxonomy
        The bundle's taxonomy.
    dump_root : str
        The run's dump root.
    run_id : str, optional
        The run the refresh belongs to (recorded in the table's commit).
    """
    try:
        refreshed = refresh_profiles(spark, conf, dt, taxonomy=taxonomy, dump_root=dump_root, run_id=run_id)
    except Exception as exc:
        raise RuntimeError(
            f"{dt} was tagged and published, but refreshing uploader_profiles failed ({type(exc).__name__}: {exc}); "
            f"rerun the day, or `vtag profiles refresh --date {dt}`"
        ) from exc
    print(f"vtag tag: {dt}: uploader_profiles {refreshed.describe()}", file=sys.stderr)
    return f"profiles {refreshed.describe()}"


def main(args: argparse.Namespace) -> int:
    from vtag.jobs.spark.session import build_session

    conf = conf_from_args(args)
    try:
        days = day_range(args.date, args.end)
    except ValueError as exc:
        raise SystemExit(f"vtag tag: {exc}") from None
    if args.run_id and len(days) > 1:
        print("vtag tag: --run-id names one run; it cannot be used with a range of days", file=sys.stderr)
        return 2
    if args.rollback and not args.repair:
        print("vtag tag: --rollback goes with --repair", file=sys.stderr)
        return 2
    with command("vtag tag"):
        stage("starting Spark")
        spark = build_session(conf)
        if args.repair:
            return repair_main(spark, conf, days, rollback=args.rollback, as_json=args.json)
        return _tag_days(spark, conf, days, args)


def _tag_days(spark: SparkSession, conf: dict[str, Any], days: list[str], args: argparse.Namespace) -> int:
    failed = 0
    for k, dt in enumerate(days, start=1):
        stage(f"day {k}/{len(days)}: {dt}")
        try:
            result = tag_day(
                spark,
                conf,
                dt,
                dump_root=args.dump_root,
                bundle=args.bundle,
                taxonomy_path=args.taxonomy,
                allow_taxonomy_mismatch=args.allow_taxonomy_mismatch,
                fmt=args.format,
                require_success=not args.allow_incomplete,
                run_id=args.run_id,
            )
        except Exception as exc:
            print(f"vtag tag: {dt}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps(asdict(result), ensure_ascii=False))
        else:
            print(
                f"{result.dt}: read {result.rows_read}, tagged {result.rows_tagged}, "
                f"quarantined {result.rows_quarantined} in {result.seconds:.1f}s (run {result.run_id}); {result.profiles}"
            )
    if failed and len(days) > 1:
        print(f"vtag tag: {failed} of {len(days)} days failed (see tag_runs)", file=sys.stderr)
    return 1 if failed else 0


def repair(spark: SparkSession, conf: dict[str, Any], dt: str, *, rollback: bool = False) -> list:
    """``vtag tag --repair`` for one day: :func:`vtag.jobs.pipeline.publish_recovery.repair_day`, then the
    profile refresh of each tag run it finished (the refresh the killed run never got to)."""
    from vtag.jobs.pipeline.publish_recovery import repair_day

    done = repair_day(spark, conf, dt, rollback=rollback)
    for rec in done:
        if rec.job != "tag" or rec.action not in ("finished", "published") or not profile_settings(conf).enabled:
            continue
        run_conf = json.loads((rec.intent or {}).get("conf") or "{}")
        bundle = run_conf.get("bundle") or str(Path(conf["bundle"]).resolve())
        dump_root = run_conf.get("dump_root") or str(conf["dump_root"])
        note = refresh_step(spark, conf, dt, bundle_taxonomy(bundle), dump_root, run_id=rec.run_id)
        rec.message += f"; {note}"
        from vtag.jobs.pipeline.publish_state import update_run

        update_run(spark, conf, rec.run_id, {"message": rec.message[:4000]})
    return done


def repair_main(spark: SparkSession, conf: dict[str, Any], days: list[str], *, rollback: bool, as_json: bool) -> int:
    failed = 0
    for dt in days:
        try:
            done = repair(spark, conf, dt, rollback=rollback)
        except Exception as exc:
            print(f"vtag tag --repair: {dt}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if as_json:
            print(json.dumps({"dt": dt, "runs": [{"run_id": r.run_id, "job": r.job, "action": r.action,
                                                   "status": r.status, "message": r.message} for r in done]},
                             ensure_ascii=False))
        elif not done:
            print(f"{dt}: no killed run to repair")
        for r in done if not as_json else ():
            print(f"{dt}: {r.run_id}: {r.action} -> {r.status}: {r.message}")
    return 1 if failed else 0
