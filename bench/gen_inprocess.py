"""``vtag generate`` without Spark: the same per-partition row generation, run in a process pool.

For machines without Java/pyspark (the GPU box of the model benchmarks). Each (day, partition)
task calls :meth:`vtag.jobs.synth.rows.Generator.part_rows` with the same :class:`vtag.jobs.synth.rows.PartSpec`
the Spark job's ``mapInArrow`` function builds (``vtag.jobs.synth.generate._task_fn``), so the same seed, knobs,
taxonomy, shared-data seeds and CJK font give the same rows (part-file names and row-group sizes
aside). The layout is the dump layout ``vtag.models.data.read_dumps`` reads::

    <out>/dt=YYYY-MM-DD/part-00000.parquet ...   one file per partition
    <out>/dt=YYYY-MM-DD/_manifest.json           as vtag.jobs.synth.generate writes it (plus "writer": "inprocess")
    <out>/dt=YYYY-MM-DD/_SUCCESS

Real-data seeds come from ``$VTAG_SHARED_DATA`` (else the knobs' ``shared_data``); without them the
generator logs that it uses reduced lexicons (different rows than a run with the seeds). Nothing
here imports pyspark.

Usage::

    python bench/gen_inprocess.py --out DUMP --start 2024-06-01 --days 4 --rows-per-day 20000 \\
        --labeled --bad-rate 0 --seed 11 --processes 12
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("gen_inprocess")

_STATE: dict = {}


def _init(tax_text: str, tax_source: str, conf: dict, seed: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _STATE.update(tax_text=tax_text, tax_source=tax_source, conf=conf, seed=seed)


def _task(args) -> tuple[str, int, int, float]:
    """One (day, partition): generate its rows and write ``part-NNNNN.parquet``."""
    import pyarrow.parquet as pq

    from vtag.jobs.synth.rows import Generator, PartSpec, output_schema
    from vtag.jobs.synth.world import get_world

    day, day_ord, part, n_rows, labeled, bad_rate, day_dir = args
    t0 = time.monotonic()
    world = get_world(_STATE["tax_text"], _STATE["conf"], _STATE["seed"], source=_STATE["tax_source"])
    gen = getattr(world, "_generator", None)
    if gen is None:
        gen = world._generator = Generator(world)
    spec = PartSpec(day, day_ord, int(part), int(n_rows), "parquet", "bytes", labeled, bad_rate, None)
    tmp = Path(day_dir) / f".part-{part:05d}.parquet.tmp"
    rows = 0
    with pq.ParquetWriter(str(tmp), output_schema(labeled), compression="snappy") as w:
        for batch in gen.part_rows(spec):
            w.write_batch(batch)
            rows += batch.num_rows
    os.replace(tmp, Path(day_dir) / f"part-{part:05d}.parquet")
    return day, int(part), rows, time.monotonic() - t0


def generate_inprocess(taxonomy_path, out, start, days: int, rows_per_day: int, *, labeled: bool = True,
                       bad_rate: float = 0.01, seed: int = 7, processes: int = 12, config=None,
                       overrides=None) -> list[dict]:
    from vtag.jobs.synth.cover import font_path
    from vtag.jobs.synth.generate import _day_manifest, load_inputs, partition_sizes

    taxonomy_path = Path(taxonomy_path)
    tax, tax_text, conf, chash, shared = load_inputs(taxonomy_path, config, overrides)
    font = font_path()
    if not font:
        log.warning("no CJK font: covers without text (rows differ from a run with the font)")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rpp = int(conf["rows_per_partition"])
    start_d = dt.date.fromisoformat(str(start))
    tasks, plans = [], []
    for d in range(days):
        day_d = start_d + dt.timedelta(days=d)
        day = day_d.isoformat()
        sizes = partition_sizes(rows_per_day, rpp)
        day_dir = out / f"dt={day}"
        shutil.rmtree(day_dir, ignore_errors=True)
        day_dir.mkdir(parents=True)
        plans.append((day, sizes, day_dir))
        tasks += [(day, day_d.toordinal(), p, n, labeled, bad_rate, str(day_dir)) for p, n in enumerate(sizes)]
    processes = max(1, min(int(processes), len(tasks)))
    t0 = time.monotonic()
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ctx.Pool(processes, initializer=_init, initargs=(tax_text, str(taxonomy_path), conf, seed)) as pool:
        done = 0
        for day, part, rows, secs in pool.imap_unordered(_task, tasks):
            done += 1
            log.info("%s part %d: %d rows in %.1fs (%d/%d)", day, part, rows, secs, done, len(tasks))
    manifests = []
    for day, sizes, day_dir in plans:
        m = _day_manifest(day, sizes, seed=seed, conf=conf, fmt="parquet", cover_mode="bytes", labeled=labeled,
                          bad_rate=bad_rate, tax=tax, chash=chash,
                          shared=shared, font=font)
        m["writer"] = f"bench/gen_inprocess.py ({processes} processes)"
        (day_dir / "_manifest.json").write_text(json.dumps(m, ensure_ascii=False, indent=2), encoding="utf-8")
        (day_dir / "_SUCCESS").write_bytes(b"")
        manifests.append(m)
    log.info("generated %d rows in %.1fs with %d processes", sum(m["rows"] for m in manifests),
             time.monotonic() - t0, processes)
    return manifests


def main() -> int:
    p = argparse.ArgumentParser(description="vtag generate without Spark (process pool)")
    p.add_argument("--taxonomy", default=str(REPO / "conf/taxonomy/demo-v1.yaml"))
    p.add_argument("--out", required=True)
    p.add_argument("--start", default="2024-06-01")
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--rows-per-day", type=int, default=20000)
    p.add_argument("--labeled", action="store_true")
    p.add_argument("--bad-rate", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--processes", type=int, default=12)
    p.add_argument("--config", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KNOB=V")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    t0 = time.monotonic()
    ms = generate_inprocess(args.taxonomy, args.out, args.start, args.days, args.rows_per_day,
                            labeled=args.labeled, bad_rate=args.bad_rate, seed=args.seed,
                            processes=args.processes, config=args.config, overrides=args.set)
    assert "pyspark" not in sys.modules, "pyspark was imported"
    for m in ms:
        print(f"dt={m['dt']}: {m['rows']} rows ({m['bad_rows']} bad) shared_data={m['shared_data']['found']} "
              f"font={m['cover_font']}")
    print(json.dumps({"rows": sum(m["rows"] for m in ms), "seconds": round(time.monotonic() - t0, 1),
                      "processes": args.processes, "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
