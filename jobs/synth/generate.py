"""``vtag generate``: synthetic UGC dumps with covers, labels and bad rows, as a Spark job.

Each Spark task generates the rows of one (day, partition) from the seed alone (see
:mod:`vtag.jobs.synth.rows`); the driver only builds a DataFrame of partition numbers, validates the
taxonomy, and computes the manifest's counts from the bad-row plans. Layout per day::

    <out>/dt=YYYY-MM-DD/part-*.parquet | part-*.txt (JSON Lines)
    <out>/dt=YYYY-MM-DD/_manifest.json      rows, bad-row counts by kind, seed, config hash, versions
    <out>/dt=YYYY-MM-DD/_SUCCESS            written last: the day is complete
    <out>/covers/dt=YYYY-MM-DD/<video_id>.jpg   (--cover-mode uri; cover_uri holds the file:// URI)

docs/generator.md documents the mechanisms, the knobs (conf/generate/default.yaml), the bad kinds
with the quarantine reason the tagging job should give, and how to read JSONL dumps.

Progress (#19 item 4): ``vtag generate`` runs inside :func:`vtag.jobs.progress.command`; :func:`generate`
reports one stage per day and step (a live line on a terminal, one stderr log line otherwise).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

from vtag.jobs.config import add_job_conf_args

log = logging.getLogger("vtag.generate")

FORMATS = ("parquet", "jsonl")
COVER_MODES = ("bytes", "uri")


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write synthetic UGC dumps (Spark job); see docs/generator.md.")
    p.add_argument("--taxonomy", default=None, help="taxonomy YAML (default: the job conf's `taxonomy`)")
    p.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--days", type=int, default=1, help="number of consecutive days (default %(default)s)")
    p.add_argument("--rows-per-day", type=int, required=True, help="rows of each day's dump")
    p.add_argument("--out", default=None, help="dump root (default: the job conf's `dump_root`)")
    p.add_argument("--labeled", action="store_true", help="add the `labels` column (labels[0] = primary leaf)")
    p.add_argument("--bad-rate", type=float, default=0.01, help="share of bad rows (mixed kinds)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default %(default)s): same seed, same dump")
    p.add_argument("--format", choices=FORMATS, default="parquet", help="file format of the dump (default %(default)s)")
    p.add_argument("--cover-mode", choices=COVER_MODES, default="bytes",
                   help="covers as bytes in the rows or as files behind cover_uri (default %(default)s)")
    p.add_argument("--config", default=None, help="generator knobs YAML (default conf/generate/default.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=V", help="override one knob, e.g. cover.width=224")
    add_job_conf_args(p, warehouse=False)
    return p


def _is_local(p: str) -> bool:
    return "://" not in p or p.startswith("file:")


def _local(p: str) -> Path:
    return Path(p.removeprefix("file://").removeprefix("file:")).resolve()


class _FS:
    """Tiny Hadoop FileSystem wrapper (works for local paths and any Hadoop-supported store)."""

    def __init__(self, spark, root: str):
        self.jvm = spark._jvm
        self.conf = spark._jsc.hadoopConfiguration()
        self.fs = self.jvm.org.apache.hadoop.fs.Path(root).getFileSystem(self.conf)

    def _p(self, p: str):
        return self.jvm.org.apache.hadoop.fs.Path(p)

    def delete(self, p: str) -> None:
        self.fs.delete(self._p(p), False)

    def write(self, p: str, data: bytes) -> None:
        out = self.fs.create(self._p(p), True)
        try:
            out.write(bytearray(data))
        finally:
            out.close()


def _day_manifest(day: str, sizes: list[int], *, seed: int, conf: dict, fmt: str, cover_mode: str, labeled: bool,
                  bad_rate: float, tax, chash: str, shared: dict, font: str | None) -> dict:
    from vtag.jobs.synth.bad import KINDS, kinds_for, make_plan
    from vtag.jobs.synth.config import GENERATOR_VERSION
    from vtag.jobs.synth.rows import output_schema

    day_ord = dt.date.fromisoformat(day).toordinal()
    kinds, _ = kinds_for(fmt, conf["bad"]["weights"])
    counts = {k: 0 for k in kinds}
    for part, n in enumerate(sizes):
        for k, c in make_plan(seed, day_ord, part, n, bad_rate, fmt, conf["bad"]).counts().items():
            counts[k] += c
    n_bad = sum(counts.values())
    rows = sum(sizes)
    return {
        "dt": day,
        "rows": rows,
        "good_rows": rows - n_bad,
        "bad_rows": n_bad,
        "bad_by_kind": counts,
        "quarantine_reasons": {k: KINDS[k] for k in kinds},
        "seed": seed,
        "config_hash": chash,
        "generator_version": GENERATOR_VERSION,
        "taxonomy_version": tax.version,
        "taxonomy_label": tax.label,
        "format": fmt,
        "cover_mode": cover_mode,
        "labeled": labeled,
        "bad_rate": bad_rate,
        "partitions": len(sizes),
        "rows_per_partition": int(conf["rows_per_partition"]),
        "columns": output_schema(labeled).names,
        "shared_data": shared,
        "cover_font": Path(font).name if font else None,
    }


class GeneratorInputs(NamedTuple):
    """What every writer of synthetic dumps loads once: the taxonomy (object and text), the knobs,
    their hash, and where the real-data seeds are (``shared``: ``{"path", "found"}`` for the manifest)."""

    tax: Any
    tax_text: str
    conf: dict
    chash: str
    shared: dict


def load_inputs(taxonomy_path: str | Path, config=None, overrides=None) -> GeneratorInputs:
    """Load the taxonomy and the knobs and locate the shared seed data (logged when absent)."""
    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.jobs.synth.config import config_hash, load_config, resolve_shared_data

    taxonomy_path = Path(taxonomy_path)
    conf = load_config(config, overrides)
    shared_dir = resolve_shared_data(conf)
    shared_found = shared_dir.is_dir() and bool(conf["text"].get("use_shared_data", True))
    if not shared_found:
        log.warning("shared data not found at %s (or disabled): lexicons are reduced to taxonomy names + "
                    "curated extras", shared_dir)
    else:
        log.info("seeding lexicons from real data under %s", shared_dir)
    return GeneratorInputs(Taxonomy.load(taxonomy_path), taxonomy_path.read_text(encoding="utf-8"), conf,
                           config_hash(conf), {"path": str(shared_dir), "found": shared_found})


def partition_sizes(rows_per_day: int, rows_per_partition: int) -> list[int]:
    """Rows of each generation task of a day: full partitions, the remainder in the last one."""
    n_parts = max(1, math.ceil(rows_per_day / rows_per_partition))
    return [rows_per_partition] * (n_parts - 1) + [rows_per_day - rows_per_partition * (n_parts - 1)]


def generate(
    spark,
    taxonomy_path: str | Path,
    out: str | Path,
    start: str | dt.date,
    days: int,
    rows_per_day: int,
    *,
    labeled: bool = False,
    bad_rate: float = 0.01,
    seed: int = 7,
    fmt: str = "parquet",
    cover_mode: str = "bytes",
    config: str | Path | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> list[dict]:
    """Write ``days`` daily dumps of ``rows_per_day`` rows each under ``out``; return the manifests.

    ``config`` is a knobs file (or an already loaded knobs dict), ``overrides`` ``knob=value``
    pairs. Re-running a day replaces it. Deterministic: the same arguments and knobs give the same
    rows and bytes (part-file names aside).
    """
    import pyarrow as pa  # noqa: F401  (workers need it; fail early on the driver)
    from pyspark.sql import functions as F

    from vtag.jobs.progress import stage
    from vtag.jobs.spark.schema import to_spark
    from vtag.jobs.synth.cover import font_path
    from vtag.jobs.synth.rows import JSONL_SCHEMA, output_schema

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if cover_mode not in COVER_MODES:
        raise ValueError(f"cover_mode must be one of {COVER_MODES}, got {cover_mode!r}")
    if rows_per_day < 1 or days < 1:
        raise ValueError("rows_per_day and days must be >= 1")
    if not 0.0 <= bad_rate < 1.0:
        raise ValueError(f"bad_rate must lie in [0, 1), got {bad_rate}")
    taxonomy_path = Path(taxonomy_path)
    tax, tax_text, conf, chash, shared = load_inputs(taxonomy_path, config, overrides)
    font = font_path()
    out = str(out)
    if cover_mode == "uri" and not _is_local(out):
        raise ValueError("--cover-mode uri writes cover files from the tasks: --out must be a local/shared path")
    if _is_local(out):
        out = str(_local(out))
        Path(out).mkdir(parents=True, exist_ok=True)
    fs = _FS(spark, out)
    start_d = dt.date.fromisoformat(str(start))
    rpp = int(conf["rows_per_partition"])
    spark_schema = to_spark(JSONL_SCHEMA if fmt == "jsonl" else output_schema(labeled))
    manifests = []
    for d in range(days):
        day_d = start_d + dt.timedelta(days=d)
        day = day_d.isoformat()
        sizes = partition_sizes(rows_per_day, rpp)
        n_parts = len(sizes)
        day_dir = f"{out.rstrip('/')}/dt={day}"
        covers_dir = None
        if cover_mode == "uri":
            covers_dir = str(Path(out) / "covers" / f"dt={day}")
            shutil.rmtree(covers_dir, ignore_errors=True)
        fn = _task_fn(tax_text, str(taxonomy_path), conf, seed, day, day_d.toordinal(), sizes, fmt, cover_mode,
                      labeled, bad_rate, covers_dir)
        df = spark.range(0, n_parts, 1, n_parts).mapInArrow(fn, spark_schema)
        stage(f"day {d + 1}/{days}: {day}: generating and writing {n_parts} partition(s)", rows_per_day)
        log.info("generating %s: %d rows in %d partitions (%s, covers=%s)", day, rows_per_day, n_parts, fmt, cover_mode)
        if fmt == "parquet":
            block = int(conf["parquet_block_mb"]) * 1024 * 1024
            df.write.mode("overwrite").option("parquet.block.size", block).parquet(day_dir)
        else:
            (df.select(F.col("value").cast("string").alias("value"))
             .write.mode("overwrite").option("compression", "none").text(day_dir))
        # the manifest, then _SUCCESS last (Spark's own marker is removed first)
        stage(f"day {d + 1}/{days}: {day}: written; manifest and _SUCCESS")
        fs.delete(f"{day_dir}/_SUCCESS")
        manifest = _day_manifest(
            day, sizes, seed=seed, conf=conf, fmt=fmt, cover_mode=cover_mode, labeled=labeled, bad_rate=bad_rate,
            tax=tax, chash=chash, shared=shared, font=font,
        )
        fs.write(f"{day_dir}/_manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2).encode("utf-8"))
        fs.write(f"{day_dir}/_SUCCESS", b"")
        manifests.append(manifest)
        log.info("wrote %s: %d rows, %d bad %s", day_dir, manifest["rows"], manifest["bad_rows"], manifest["bad_by_kind"])
    return manifests


def _task_fn(tax_text, tax_source, conf, seed, day, day_ord, sizes, fmt, cover_mode, labeled, bad_rate, covers_dir):
    """The mapInArrow function: partition numbers in, generated rows out (runs on the workers)."""

    def fn(batches):
        from vtag.jobs.synth.rows import Generator, PartSpec
        from vtag.jobs.synth.world import get_world

        world = get_world(tax_text, conf, seed, source=tax_source)
        gen = getattr(world, "_generator", None)
        if gen is None:
            gen = world._generator = Generator(world)
        for b in batches:
            for part in b.column(0).to_pylist():
                spec = PartSpec(day, day_ord, int(part), sizes[int(part)], fmt, cover_mode, labeled, bad_rate, covers_dir)
                yield from gen.part_rows(spec)

    return fn


def main(args) -> int:
    """Run ``vtag generate``; returns the exit status (progress on stderr, one line per day on stdout).

    Parameters
    ----------
    args
        The parsed options of :func:`_arg_parser`.
    """
    from vtag.jobs.config import load_job_conf
    from vtag.jobs.progress import command, stage
    from vtag.jobs.spark.session import build_session

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    job_conf = load_job_conf(args.job_conf, overrides=args.conf)
    taxonomy = args.taxonomy or job_conf.get("taxonomy")
    out = args.out or job_conf.get("dump_root") or "./dumps"
    if not taxonomy:
        print("vtag generate: no --taxonomy and no `taxonomy` in the job conf", file=sys.stderr)
        return 2
    with command("vtag generate"):
        stage("starting Spark")
        spark = build_session(job_conf)
        manifests = generate(
            spark, taxonomy, out, args.start, args.days, args.rows_per_day, labeled=args.labeled,
            bad_rate=args.bad_rate, seed=args.seed, fmt=args.format, cover_mode=args.cover_mode,
            config=args.config, overrides=args.set,
        )
    for m in manifests:
        print(f"dt={m['dt']}: {m['rows']} rows ({m['bad_rows']} bad: {m['bad_by_kind']}) -> {out}")
    return 0
