"""Throughput of the tagging path with and without Spark, and memory as the day grows.

The same N rows (covers included) go through
  (a) ``Predictor.predict`` in this one process (torch threads = --threads), and
  (b) ``vtag tag`` (the job function) on ``local[2]``: read, validate, infer in mapInArrow, write Delta.
It prints rows/s of both and their ratio (target: b/a >= 0.8), and the peak RSS of the Spark driver
(JVM) and of the Python workers at N and at 4N (target: workers at 4N within 1.2x of N).

    .venv/bin/python bench/throughput.py --bundle bundles/demo --rows 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class PeakSampler:
    """Samples the RSS of this process tree every ``every`` s: driver JVM, Python workers, this process."""

    def __init__(self, every: float = 0.2):
        import psutil

        self.psutil = psutil
        self.every = every
        self.peak = {"jvm": 0, "workers": 0, "worker_max": 0, "self": 0}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = self.psutil.Process()
        while not self._stop.is_set():
            jvm = workers = worker_max = 0
            try:
                kids = me.children(recursive=True)
            except self.psutil.Error:
                kids = []
            for p in kids:
                try:
                    rss = p.memory_info().rss
                    cmd = " ".join(p.cmdline())
                except self.psutil.Error:
                    continue
                if "java" in p.name() or "java" in cmd.split(" ")[0]:
                    jvm += rss
                elif "pyspark" in cmd or "python" in p.name():
                    workers += rss
                    worker_max = max(worker_max, rss)
            self.peak["jvm"] = max(self.peak["jvm"], jvm)
            self.peak["workers"] = max(self.peak["workers"], workers)
            self.peak["worker_max"] = max(self.peak["worker_max"], worker_max)
            self.peak["self"] = max(self.peak["self"], me.memory_info().rss)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakSampler:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def mib(b: int) -> str:
    return f"{b / 2**20:,.0f} MiB"


def single_process(bundle: str, dump_root: Path, dt: str, threads: int, batch: int) -> tuple[float, int]:
    """(rows/s, rows) of Predictor.predict over the day's rows in this process."""
    import pyarrow.dataset as ds
    import torch

    from vtag.models.predictor import Predictor

    torch.set_num_threads(threads)
    pred = Predictor.load(bundle, device="cpu")
    dataset = ds.dataset(str(dump_root / f"dt={dt}"), format="parquet")
    t0 = time.perf_counter()
    n = 0
    for rb in dataset.to_batches(batch_size=batch):
        frame = rb.to_pandas()
        out = pred.predict(frame)
        n += len(out)
    return n / (time.perf_counter() - t0), n


def spark_run(spark, conf: dict, bundle: str, dump_root: Path, dt: str) -> tuple[float, dict]:
    from vtag.jobs.pipeline.tag import tag_day

    t0 = time.perf_counter()
    res = tag_day(spark, conf, dt, dump_root=str(dump_root), bundle=bundle)
    secs = time.perf_counter() - t0
    return res.rows_read / secs, {"read": res.rows_read, "tagged": res.rows_tagged, "quarantined": res.rows_quarantined}


def save_markdown(path: Path, args: argparse.Namespace, results: dict, sizes: list[int]) -> None:
    """The figures as a markdown table, with the command that produced them."""
    import platform

    n = args.rows
    lines = [
        "# Tagging throughput: one process vs `vtag tag` on Spark",
        "",
        f"Command: `.venv/bin/python bench/throughput.py {' '.join(sys.argv[1:])}`",
        "",
        f"Machine: {args.device_note}, {os.cpu_count()} CPUs, {platform.machine()}; bundle `{args.bundle}`; "
        f"Arrow batch {args.batch} rows; covers included (JPEG bytes), no bad rows. "
        + (f"Spark warmed up first by tagging a {args.warmup_rows:,}-row day (JVM, Python workers with their cached "
           "Predictor, Delta tables), as (a) loads its model before timing."
           if args.warmup_rows else "Spark timed from a cold start (first run of the session)."),
        "",
        "| path | rows | rows/s |",
        "|---|---|---|",
        f"| (a) `Predictor.predict`, one process, {args.threads} torch threads | {n:,} | {results['single_rows_per_s']:,.1f} |",
    ]
    for size in sizes:
        lines.append(f"| (b) `vtag tag` on local[{args.threads}] (read, validate, infer, Delta write) | {size:,} | "
                     f"{results[f'spark_rows_per_s_{size}']:,.1f} |")
    lines += ["", f"Ratio (b)/(a) at N = {n:,}: **{results['ratio']:.2f}** (target >= 0.8)", "",
              "| rows | driver JVM peak | Python workers peak (sum) | largest Python worker | bench process |",
              "|---|---|---|---|---|"]
    for size in sizes:
        p = results[f"peak_{size}"]
        lines.append(f"| {size:,} | {mib(p['jvm'])} | {mib(p['workers'])} | {mib(p['worker_max'])} | {mib(p['self'])} |")
    if "worker_mem_ratio" in results:
        lines += ["", f"Largest Python worker 4N/N: **{results['worker_mem_ratio']:.2f}** (target <= 1.2); "
                      f"driver JVM 4N/N: {results['driver_mem_ratio']:.2f}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(REPO / "bundles" / "demo"))
    ap.add_argument("--taxonomy", default=str(REPO / "conf" / "taxonomy" / "demo-v1.yaml"))
    ap.add_argument("--rows", type=int, default=20000, help="N (>= 20000 for the issue's figure)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1024, help="Arrow batch rows (Spark: maxRecordsPerBatch)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--skip-4n", action="store_true")
    ap.add_argument("--warmup-rows", type=int, default=2000,
                    help="tag a small day first so the timed runs are steady state (0: time a cold start)")
    ap.add_argument("--device-note", default="CPU (2 cores)")
    ap.add_argument("--save", default=str(REPO / "bench" / "results" / "throughput.md"),
                    help="markdown results file ('' to skip)")
    args = ap.parse_args()

    from vtag.jobs.config import load_job_conf
    from vtag.jobs.spark.session import build_session
    from vtag.jobs.synth.generate import generate

    work = Path(args.workdir or tempfile.mkdtemp(prefix="vtag-bench-tp-"))
    conf = load_job_conf(overrides={
        "master": f"local[{args.threads}]", "warehouse": str(work / "wh"), "taxonomy": args.taxonomy,
        "tag_partitions": str(args.threads * 2),
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(args.batch),
    })
    spark = build_session(conf)
    sizes = [args.rows] if args.skip_4n else [args.rows, 4 * args.rows]
    dumps = {}
    for i, n in enumerate(sizes):
        root = work / f"dump-{n}"
        if not (root / "dt=2026-11-20" / "_SUCCESS").exists():
            t0 = time.perf_counter()
            generate(spark, args.taxonomy, root, "2026-11-20", 1, n, bad_rate=0.0, seed=11 + i)
            print(f"generated {n} rows in {time.perf_counter() - t0:.0f}s", flush=True)
        dumps[n] = root

    if args.warmup_rows:
        # steady state, as in (a) where the model is loaded before the clock starts: the JVM, the
        # Python workers, their cached Predictor and the Delta tables exist before the timed runs
        wroot = work / f"dump-warmup-{args.warmup_rows}"
        if not (wroot / "dt=2026-11-19" / "_SUCCESS").exists():
            generate(spark, args.taxonomy, wroot, "2026-11-19", 1, args.warmup_rows, bad_rate=0.0, seed=5)
        t0 = time.perf_counter()
        spark_run(spark, conf, args.bundle, wroot, "2026-11-19")
        print(f"warm-up: tagged {args.warmup_rows} rows in {time.perf_counter() - t0:.0f}s (JVM, workers, "
              f"model load, table creation; not timed)", flush=True)

    n = args.rows
    rps_single, n_single = single_process(args.bundle, dumps[n], "2026-11-20", args.threads, args.batch)
    print(f"(a) Predictor.predict, 1 process, {args.threads} threads: {rps_single:,.1f} rows/s over {n_single} rows",
          flush=True)
    results = {"rows": n, "single_rows_per_s": rps_single}
    for size in sizes:
        with PeakSampler() as peak:
            rps, counts = spark_run(spark, conf, args.bundle, dumps[size], "2026-11-20")
        results[f"spark_rows_per_s_{size}"] = rps
        results[f"peak_{size}"] = dict(peak.peak)
        print(f"(b) vtag tag on local[{args.threads}], {size} rows: {rps:,.1f} rows/s {counts}; peak RSS: "
              f"driver JVM {mib(peak.peak['jvm'])}, Python workers {mib(peak.peak['workers'])} "
              f"(largest one {mib(peak.peak['worker_max'])}), this process {mib(peak.peak['self'])}", flush=True)
    ratio = results[f"spark_rows_per_s_{n}"] / rps_single
    print(f"ratio spark/single at N={n}: {ratio:.2f} (target >= 0.8)")
    if not args.skip_4n:
        w = results[f"peak_{4 * n}"]["worker_max"] / max(1, results[f"peak_{n}"]["worker_max"])
        d = results[f"peak_{4 * n}"]["jvm"] / max(1, results[f"peak_{n}"]["jvm"])
        print(f"peak Python-worker RSS 4N/N: {w:.2f} (target <= 1.2); driver JVM 4N/N: {d:.2f}")
        results.update(worker_mem_ratio=w, driver_mem_ratio=d)
    results.update(ratio=ratio, device=args.device_note)
    if args.save:
        save_markdown(Path(args.save), args, results, sizes)
    print(json.dumps(results))
    spark.stop()
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    sys.exit(main())
