"""``vtag tag``: tag one day of a UGC dump into the Delta tag tables.

read the day -> validate (bad rows to ``video_tags_quarantine`` with a reason) -> resolve
``cover_uri`` through Spark's ``binaryFile`` source -> ``Predictor`` in ``mapInArrow`` (loaded once
per Python worker) -> ``video_tags`` partition replaced with ``replaceWhere`` -> one ``tag_runs``
row. The run is marked ``succeeded`` only when rows read = rows tagged + rows quarantined.
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
from jobs.inference import MODEL_INPUT_COLUMNS, predict_fn
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
    from hierarchy.taxonomy import Taxonomy

    path = Path(bundle) / "taxonomy.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{bundle} is not a model bundle: {path.name} is missing")
    return Taxonomy.load(path).version


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
) -> RunResult:
    """Tag day ``dt`` (YYYY-MM-DD); returns the run's counts. Raises on failure after recording it."""
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
    try:
        b_version = bundle_taxonomy_version(bundle)
        if b_version != tax_version and not allow_taxonomy_mismatch:
            raise BundleMismatchError(
                f"bundle {bundle} was trained on taxonomy version {b_version}, the job runs {tax_version} "
                f"({taxonomy_path}); retrain, pick the matching bundle, or pass --allow-taxonomy-mismatch"
            )
        from models.bundle import bundle_model_version

        record["model_version"] = bundle_model_version(bundle)
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
            F.lit(run_id).alias("run_id"),
        )
        replace_day(quarantine, conf, "video_tags_quarantine", dt)

        n_parts = int(conf.get("tag_partitions") or spark.sparkContext.defaultParallelism)
        model_in = resolve_covers(spark, valid).select(*MODEL_INPUT_COLUMNS).repartition(max(1, n_parts))
        preds = model_in.mapInArrow(
            predict_fn(bundle, tax_version, allow_taxonomy_mismatch, load_log), to_spark(PREDICTION_SCHEMA)
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
        status, message = "succeeded", None
    except Exception as exc:
        finished = utcnow()
        record.update(
            finished_at=finished, seconds=time.time() - t0, status="failed", message=f"{type(exc).__name__}: {exc}"[:4000]
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
    )


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
                f"quarantined {result.rows_quarantined} in {result.seconds:.1f}s (run {result.run_id})"
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
