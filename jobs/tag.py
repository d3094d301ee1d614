"""``vtag tag``: tag one day of a UGC dump into the Delta tag tables.

read the day -> validate (bad rows to ``video_tags_quarantine`` with a reason) -> resolve
``cover_uri`` through Spark's ``binaryFile`` source -> join the uploader profiles of the days before
(``uploader_profiles``, broadcast; :mod:`jobs.profiles`) -> ``Predictor`` in ``mapInArrow`` (loaded
once per Python worker) -> ``video_tags`` partition replaced with ``replaceWhere`` -> refresh
``uploader_profiles`` through the day -> one ``tag_runs`` row. The run is marked ``succeeded`` only
when rows read = rows tagged + rows quarantined and the profile refresh went through.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import day_range as config_day_range
from jobs.config import load_job_conf
from jobs.dumps import read_day
from jobs.inference import MODEL_INPUT_COLUMNS, PROFILE_INPUT_COLUMNS, predict_fn
from jobs.profiles import bundle_taxonomy, join_profiles, profile_settings, profiles_for_day, refresh_profiles
from jobs.schema import to_spark
from jobs.tables import append_run, ensure_table, replace_day, table_path, utcnow
from jobs.validate import mark
from models.schema import MAX_COVER_BYTES, PREDICTION_SCHEMA


class InvariantError(RuntimeError):
    """Rows read != rows tagged + rows quarantined: the run is marked failed."""


class BundleMismatchError(RuntimeError):
    """The bundle was trained on another taxonomy version than the job's."""


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
    p.add_argument("--warehouse", help="Delta warehouse root (default: job conf warehouse)")
    p.add_argument("--taxonomy", help="the job's taxonomy file; the bundle must match its version")
    p.add_argument("--allow-taxonomy-mismatch", action="store_true", help="tag with a bundle of another taxonomy version")
    p.add_argument("--job-conf", help="job conf YAML (default conf/jobs/local.yaml)")
    p.add_argument("--conf", action="append", default=[], metavar="K=V", help="override a job or Spark setting")
    p.add_argument("--format", choices=["parquet", "jsonl"], help="dump format (default: detected)")
    p.add_argument("--allow-incomplete", action="store_true", help="tag a day without its _SUCCESS marker")
    p.add_argument("--run-id", help="run id (default: generated)")
    p.add_argument("--json", action="store_true", help="print the run result as JSON")
    return p


def bundle_taxonomy_version(bundle: str) -> str:
    """The taxonomy version a bundle was trained on, read from its ``taxonomy.yaml`` snapshot."""
    return bundle_taxonomy(bundle).version


def resolve_covers(spark: SparkSession, df: DataFrame) -> DataFrame:
    """Fill ``cover`` from ``cover_uri`` through the ``binaryFile`` source where ``cover`` is null.

    A URI that names no file (or a file over the size limit) leaves ``cover`` null: the row is then
    tagged as ``cover_missing``.
    """
    need = F.col("cover").isNull() & F.col("cover_uri").isNotNull() & (F.trim("cover_uri") != "")
    if df.where(need).limit(1).count() == 0:
        return df
    norm = lambda c: F.regexp_replace(c, r"^file:(//)?(?=/)", "")  # noqa: E731
    dirs = [
        r[0]
        for r in df.where(need).select(F.regexp_extract(norm(F.col("cover_uri")), r"^(.*)/[^/]*$", 1)).distinct().collect()
        if r[0]
    ]
    files = (
        spark.read.format("binaryFile")
        .load(dirs)
        .where(F.col("length") <= MAX_COVER_BYTES)
        .select(norm(F.col("path")).alias("_cover_path"), F.col("content").alias("_cover_content"))
    )
    joined = df.withColumn("_cover_path", F.when(need, norm(F.col("cover_uri")))).join(
        files, on="_cover_path", how="left"
    )
    return joined.withColumn("cover", F.coalesce(F.col("cover"), F.col("_cover_content"))).drop(
        "_cover_path", "_cover_content"
    )


def register_in_catalog(spark: SparkSession, conf: dict) -> None:
    """Register the tables in the metastore when the conf says ``catalog_register: true``.

    The day is already written and recorded; a metastore outage must not turn it into a failed run,
    so a failure here is logged loudly and the tables stay readable by path.
    """
    from jobs.catalog import register_if_configured

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

    ``load_log`` / ``input_log``: directories for tests (:func:`jobs.inference.get_predictor`,
    :func:`jobs.inference.log_input`).
    """
    from hierarchy.taxonomy import Taxonomy

    date.fromisoformat(dt)
    t0 = time.time()
    started = utcnow()
    dump_root = str(dump_root or conf["dump_root"])
    bundle = str(Path(bundle or conf["bundle"]).resolve())
    run_id = run_id or f"{job}-{dt}-{uuid.uuid4().hex[:12]}"
    conf = {**conf, "_run_id": run_id, "_job": job}
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
    marked = None
    notes: list[str] = []
    try:
        b_taxonomy = bundle_taxonomy(bundle)
        if b_taxonomy.version != tax_version and not allow_taxonomy_mismatch:
            raise BundleMismatchError(
                f"bundle {bundle} was trained on taxonomy version {b_taxonomy.version}, the job runs {tax_version} "
                f"({taxonomy_path}); retrain, pick the matching bundle, or pass --allow-taxonomy-mismatch"
            )
        from models.bundle import bundle_model_version

        record["model_version"] = bundle_model_version(bundle)
        settings = profile_settings(conf)
        # the bundle's version: the one its tags carry and its Predictor reads profiles in
        joined = profiles_for_day(spark, conf, dt, b_taxonomy, dump_root) if settings.enabled else None
        notes.append(f"profiles: {joined.describe()}" if joined else "profiles: off")
        for name in ("video_tags", "video_tags_quarantine"):
            ensure_table(spark, conf, name)

        raw = read_day(spark, dump_root, dt, fmt=fmt, require_success=require_success)
        marked = mark(raw, str(conf.get("corrupt_cover", "quarantine"))).persist(StorageLevel.MEMORY_AND_DISK)
        valid = marked.where(F.col("reason").isNull())
        rejected = marked.where(F.col("reason").isNotNull())
        rows_read = marked.count()
        record["rows_read"] = rows_read

        quarantine = rejected.select(
            F.col("video_id"),
            F.lit(dt).cast("date").alias("dt"),
            F.col("_raw").alias("raw"),
            F.col("reason"),
            F.lit(None).cast("string").alias("detail"),
            F.lit(run_id).alias("run_id"),
        )
        replace_day(quarantine, conf, "video_tags_quarantine", dt)

        n_parts = int(conf.get("tag_partitions") or spark.sparkContext.defaultParallelism)
        model_in = model_input(resolve_covers(spark, valid), joined).repartition(max(1, n_parts))
        preds = model_in.mapInArrow(
            predict_fn(bundle, tax_version, allow_taxonomy_mismatch, load_log, input_log), to_spark(PREDICTION_SCHEMA)
        )
        tagged = preds.withColumn("dt", F.lit(dt).cast("date")).withColumn("run_id", F.lit(run_id)).withColumn(
            "tagged_at", F.lit(started)
        )
        replace_day(tagged, conf, "video_tags", dt)

        day = F.col("dt") == F.lit(dt).cast("date")
        rows_tagged = spark.read.format("delta").load(table_path(conf, "video_tags")).where(day).count()
        rows_quarantined = (
            spark.read.format("delta").load(table_path(conf, "video_tags_quarantine")).where(day).count()
        )
        record.update(rows_tagged=rows_tagged, rows_quarantined=rows_quarantined)
        if rows_read != rows_tagged + rows_quarantined:
            raise InvariantError(
                f"{dt}: rows read {rows_read} != rows tagged {rows_tagged} + rows quarantined {rows_quarantined}"
            )
        if settings.enabled:
            notes.append(refresh_step(spark, conf, dt, b_taxonomy, dump_root))
        status, message = "succeeded", "; ".join(notes)
    except Exception as exc:
        finished = utcnow()
        record.update(
            finished_at=finished, seconds=time.time() - t0, status="failed",
            message="; ".join([f"{type(exc).__name__}: {exc}", *notes])[:4000],
        )
        try:
            append_run(spark, conf, record)
        finally:
            if marked is not None:
                marked.unpersist()
        raise
    marked.unpersist()
    record.update(finished_at=utcnow(), seconds=time.time() - t0, status=status, message=message)
    append_run(spark, conf, record)
    register_in_catalog(spark, conf)
    return RunResult(
        run_id=run_id,
        dt=dt,
        rows_read=rows_read,
        rows_tagged=rows_tagged,
        rows_quarantined=rows_quarantined,
        seconds=record["seconds"],
        taxonomy_version=tax_version,
        model_version=record["model_version"],
        status=status,
        profiles=message,
    )


def model_input(rows: DataFrame, joined) -> DataFrame:
    """The ``mapInArrow`` input: MODEL_INPUT_COLUMNS, plus the profile columns when ``joined`` is given.

    Parameters
    ----------
    rows : DataFrame
        The day's valid rows with covers resolved.
    joined : jobs.profiles.JoinProfiles or None
        The profiles of the days before (None: ``profiles.enabled`` is false).
    """
    if joined is None:
        return rows.select(*MODEL_INPUT_COLUMNS)
    return join_profiles(rows, joined.frame).select(*MODEL_INPUT_COLUMNS, *PROFILE_INPUT_COLUMNS)


def refresh_step(spark: SparkSession, conf: dict[str, Any], dt: str, taxonomy, dump_root: str) -> str:
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
    """
    try:
        refreshed = refresh_profiles(spark, conf, dt, taxonomy=taxonomy, dump_root=dump_root)
    except Exception as exc:
        raise RuntimeError(
            f"{dt} was tagged and published, but refreshing uploader_profiles failed ({type(exc).__name__}: {exc}); "
            f"rerun the day, or `vtag profiles refresh --date {dt}`"
        ) from exc
    print(f"vtag tag: {dt}: uploader_profiles {refreshed.describe()}", file=sys.stderr)
    return f"profiles {refreshed.describe()}"


def main(args: argparse.Namespace) -> int:
    from jobs.spark import build_session

    overrides = list(args.conf)
    if args.warehouse:
        overrides.append(f"warehouse={args.warehouse}")
    conf = load_job_conf(args.job_conf, overrides)
    days = day_range(args.date, args.end)
    if args.run_id and len(days) > 1:
        print("vtag tag: --run-id names one run; it cannot be used with a range of days", file=sys.stderr)
        return 2
    spark = build_session(conf)
    failed = 0
    for dt in days:
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


def day_range(start: str, end: str | None) -> list[str]:
    """``[start .. end]`` as YYYY-MM-DD strings (just ``[start]`` without ``end``); refuses end < start."""
    try:
        return config_day_range(start, end or start)
    except ValueError:
        raise SystemExit(f"vtag tag: --end {end} is before --date {start}") from None
