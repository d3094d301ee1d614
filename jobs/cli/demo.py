"""``vtag demo``: the whole main job on the embedded defaults.

1. generate three days of UGC dumps (with a 1% mix of bad rows) and a labeled training set;
2. train the demo model (``conf/model/demo.yaml``) briefly (a bundle in ``./bundles/demo``);
3. tag the three days into the local Delta warehouse (``./warehouse``); ``uploader_profiles`` count
   the labeled training set too (``profiles.labels_root``, unless the job conf names another), so the
   uploaders of the labeled data have profiles (``source = labels``) beside the tags of a briefly
   trained model, whose low scores weigh little (``profiles.count: score``);
4. print a summary: rows per day, top tags per level, quarantine reasons, and how to query.

``dump_root`` is set to the demo's ``dumps/`` (the ``video_uploads`` view reads them).

Steps whose output already exists are reused (``--fresh`` redoes everything).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import time
from pathlib import Path

from vtag import conf_dir
from vtag.jobs.config import add_job_conf_args, load_job_conf


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--start", default="2026-11-20", help="first dump day (YYYY-MM-DD)")
    p.add_argument("--days", type=int, default=3, help="days of dumps to generate and tag (default %(default)s)")
    p.add_argument("--rows-per-day", type=int, default=2000, help="rows of each day's dump (default %(default)s)")
    p.add_argument("--train-rows", type=int, default=12000, help="rows of the labeled training dump")
    p.add_argument("--train-minutes", type=float, default=4.0, help="training time budget")
    p.add_argument("--model-config", default=str(conf_dir() / "model" / "demo.yaml"),
                   help="model config YAML (default: the packaged conf/model/demo.yaml)")
    p.add_argument("--taxonomy", default=None, help="default: the job conf's taxonomy (demo-v1)")
    p.add_argument("--workdir", default=".", help="where dumps/, bundles/ and warehouse/ go")
    add_job_conf_args(p, warehouse=False)  # the warehouse is <workdir>/warehouse
    p.add_argument("--seed", type=int, default=7, help="random seed of data and training (default %(default)s)")
    p.add_argument("--fresh", action="store_true", help="delete earlier demo output first")
    return p


def run_demo(spark, conf: dict, args: argparse.Namespace) -> dict:
    """Generate, train, tag; returns the per-day run results."""
    import yaml

    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.jobs.pipeline.tag import tag_day
    from vtag.jobs.synth.generate import generate
    from vtag.models.data import read_dumps
    from vtag.models.train import train

    work = Path(args.workdir).resolve()
    dumps, labeled, bundle = work / "dumps", work / "dumps-labeled", work / "bundles" / "demo"
    taxonomy_path = Path(args.taxonomy or conf["taxonomy"])
    if not taxonomy_path.is_absolute() and not taxonomy_path.exists():
        # not found from the working directory: a `conf/...` path of the packaged conf (the checkout's
        # root in a checkout, the installed vtag package otherwise)
        taxonomy_path = conf_dir().parent / taxonomy_path
    taxonomy = Taxonomy.load(taxonomy_path)
    if args.fresh:
        for p in (dumps, labeled, bundle, Path(conf["warehouse"])):
            shutil.rmtree(p, ignore_errors=True)
    start = dt.date.fromisoformat(args.start)
    days = [(start + dt.timedelta(days=i)).isoformat() for i in range(args.days)]

    t0 = time.time()
    if not all((dumps / f"dt={d}" / "_SUCCESS").exists() for d in days):
        print(f"[1/4] generating {args.days} days x {args.rows_per_day} rows -> {dumps}")
        generate(spark, taxonomy_path, dumps, start, args.days, args.rows_per_day, labeled=False,
                 bad_rate=0.01, seed=args.seed)
    train_day = (start - dt.timedelta(days=30)).isoformat()
    if not (labeled / f"dt={train_day}" / "_SUCCESS").exists():
        print(f"[2/4] generating a labeled set of {args.train_rows} rows -> {labeled}")
        generate(spark, taxonomy_path, labeled, train_day, 1, args.train_rows, labeled=True, bad_rate=0.0,
                 seed=args.seed + 1000)
    if not (bundle / "model.safetensors").exists():
        print(f"[3/4] training {Path(args.model_config).name} for at most {args.train_minutes} min -> {bundle}")
        config = yaml.safe_load(Path(args.model_config).read_text(encoding="utf-8"))
        frame = read_dumps(labeled)
        train(config, taxonomy, frame, bundle, max_minutes=args.train_minutes, seed=args.seed, label="demo",
              data_desc={"data": str(labeled), "config": str(args.model_config)})
    print(f"      data and model ready in {time.time() - t0:.0f}s")
    conf["dump_root"] = str(dumps)  # the views (video_uploads) read the demo's dumps
    profiles = dict(conf.get("profiles") or {})
    if not profiles.get("labels_root"):
        profiles["labels_root"] = str(labeled)  # profiles from the labeled set too (source = labels)
        conf["profiles"] = profiles
    results = {}
    for d in days:
        print(f"[4/4] tagging {d}")
        results[d] = tag_day(spark, conf, d, dump_root=str(dumps), bundle=str(bundle),
                             taxonomy_path=str(taxonomy_path))
    return results


def print_summary(spark, conf: dict, results: dict) -> None:
    from pyspark.sql import functions as F

    from vtag.jobs.warehouse.tables import table_path

    tags = spark.read.format("delta").load(table_path(conf, "video_tags"))
    quarantine = spark.read.format("delta").load(table_path(conf, "video_tags_quarantine"))
    print("\nrows per day")
    print(f"  {'dt':<12}{'read':>8}{'tagged':>8}{'quarantined':>13}{'seconds':>9}")
    for d, r in results.items():
        print(f"  {d:<12}{r.rows_read:>8}{r.rows_tagged:>8}{r.rows_quarantined:>13}{r.seconds:>9.1f}")
    for level in (1, 2, 3):
        top = (tags.where(F.col(f"level{level}").isNotNull()).groupBy(f"level{level}").count()
               .orderBy(F.desc("count"), f"level{level}").limit(5).collect())
        print(f"\ntop level-{level} tags: " + ", ".join(f"{r[0]} ({r[1]})" for r in top))
    leaves = tags.groupBy("leaf_id", F.array_join("path_names", " › ").alias("p")).count()
    print("top leaves: " + ", ".join(f"{r.p} ({r['count']})" for r in leaves.orderBy(F.desc("count")).limit(5).collect()))
    share = tags.agg(F.avg(F.col("cover_missing").cast("double"))).first()[0]
    print(f"cover_missing share: {share:.1%}")
    reasons = quarantine.groupBy("reason").count().orderBy(F.desc("count")).collect()
    print("quarantine reasons: " + (", ".join(f"{r.reason} ({r['count']})" for r in reasons) or "none"))
    wh = conf["warehouse"]
    print(
        "\nquery the tables:\n"
        f"  .venv/bin/vtag sql \"SELECT dt, level1, count(*) n FROM video_tags GROUP BY dt, level1 ORDER BY dt, n DESC\" --warehouse {wh}\n"
        f"  .venv/bin/vtag query \"SELECT reason, count(*) FROM video_tags_quarantine GROUP BY reason\" --warehouse {wh}\n"
        f"  or in pyspark: spark.read.format('delta').load('{table_path(conf, 'video_tags')}')"
    )


def main(args: argparse.Namespace) -> int:
    from vtag.jobs.spark.session import build_session

    conf = load_job_conf(args.job_conf, args.conf)
    wh = Path(conf["warehouse"])
    if not wh.is_absolute():
        conf["warehouse"] = str((Path(args.workdir) / wh).resolve())
    t0 = time.time()
    spark = build_session(conf)
    results = run_demo(spark, conf, args)
    print_summary(spark, conf, results)
    print(f"\ndemo finished in {time.time() - t0:.0f}s")
    return 0
