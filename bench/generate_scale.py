"""Scale bench of `vtag generate`: rows/s and peak memory at two sizes (default 20k and 200k rows/day).

Each size runs in a fresh child process (fresh JVM and Python workers) that calls
``vtag.jobs.synth.generate.generate`` and samples, every 0.2 s, the resident memory (RSS) of its whole process
tree: the driver's Python, the JVM it starts, Spark's Python daemon and workers. The peak of the
sum is reported (and the peak per part). Throughput counts the ``generate`` call only (not the
session start). The issue's bar: peak memory at the large size within 1.5x of the small one.

    .venv/bin/python bench/generate_scale.py --taxonomy conf/taxonomy/demo-v1.yaml            # 20k and 200k
    .venv/bin/python bench/generate_scale.py --sizes 2000 20000 --save ''                      # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _tree_rss() -> dict[str, int]:
    import psutil

    me = psutil.Process(os.getpid())
    out = {"driver_py": 0, "jvm": 0, "py_workers": 0, "other": 0, "n_py": 0}
    procs = [me] + me.children(recursive=True)
    for p in procs:
        try:
            rss = p.memory_info().rss
            name = p.name()
            cmd = " ".join(p.cmdline()[:3])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if p.pid == me.pid:
            out["driver_py"] += rss
        elif "java" in name:
            out["jvm"] += rss
        elif "python" in name or "pyspark" in cmd:
            out["py_workers"] += rss
            out["n_py"] += 1
        else:
            out["other"] += rss
    return out


def one(args) -> int:
    """Child mode: one size, print a JSON line with the figures."""
    from vtag.jobs.config import load_job_conf
    from vtag.jobs.spark.session import build_session
    from vtag.jobs.synth.generate import generate

    peak = {"total": 0, "max_py_procs": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            r = _tree_rss()
            n_py = r.pop("n_py")
            peak["max_py_procs"] = max(peak.get("max_py_procs", 0), n_py)
            tot = sum(r.values())
            if tot > peak["total"]:
                peak.update(r, total=tot)
            stop.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    spark = build_session(load_job_conf(overrides={
        "master": f"local[{args.cores}]", "warehouse": f"{args.work}/wh", "spark.driver.memory": args.driver_memory}))
    out = f"{args.work}/dump-{args.one}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    (m,) = generate(spark, args.taxonomy, out, "2026-11-20", 1, args.one, labeled=args.labeled, bad_rate=0.01,
                    seed=7, fmt=args.format, cover_mode="bytes")
    secs = time.time() - t0
    stop.set()
    th.join()
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    spark.stop()
    shutil.rmtree(out, ignore_errors=True)
    print("RESULT " + json.dumps({
        "rows": m["rows"], "partitions": m["partitions"], "seconds": secs, "rows_per_s": m["rows"] / secs,
        "peak_mb": peak["total"] / 2**20, "peak_parts_mb": {k: v / 2**20 for k, v in peak.items() if k not in ("total", "max_py_procs")},
        "max_py_procs": peak["max_py_procs"],
        "dump_mb": size / 2**20, "bad_rows": m["bad_rows"],
    }), flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--taxonomy", default=str(REPO / "conf" / "taxonomy" / "demo-v1.yaml"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[20000, 200000])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--driver-memory", default="2g")
    ap.add_argument("--format", default="parquet", choices=["parquet", "jsonl"])
    ap.add_argument("--labeled", action="store_true")
    ap.add_argument("--work", default="/tmp/vtag-generate-scale")
    ap.add_argument("--save", default=str(REPO / "bench" / "results" / "generate_scale.md"))
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        return one(args)
    rows = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--taxonomy", args.taxonomy, "--cores", str(args.cores),
               "--driver-memory", args.driver_memory, "--format", args.format, "--work", args.work]
        if args.labeled:
            cmd.append("--labeled")
        print("$ " + " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        res = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not res:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            return 1
        r = json.loads(res[-1][7:])
        print(json.dumps(r), flush=True)
        rows.append(r)
    import platform

    import psutil

    lines = [
        "# `vtag generate` scale bench",
        "",
        f"Command: `.venv/bin/python bench/generate_scale.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        f"Machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB "
        f"({platform.machine()}), shared with other work while it ran; Spark `local[{args.cores}]`, "
        f"driver memory {args.driver_memory}; format {args.format}, covers as bytes (160x120 JPEG), "
        f"{'labeled' if args.labeled else 'unlabeled'}, 1 % bad rows, 1 day.",
        "",
        "| rows/day | partitions | seconds | rows/s | peak RSS (MiB) | driver py | JVM | Python workers (procs) | dump MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["peak_parts_mb"]
        lines.append(f"| {r['rows']:,} | {r['partitions']} | {r['seconds']:.0f} | {r['rows_per_s']:.0f} | "
                     f"{r['peak_mb']:.0f} | {p['driver_py']:.0f} | {p['jvm']:.0f} | {p['py_workers']:.0f} ({r['max_py_procs']}) | "
                     f"{r['dump_mb']:.0f} |")
    if len(rows) >= 2:
        ratio = rows[-1]["peak_mb"] / rows[0]["peak_mb"]
        lines += ["", f"Peak memory ratio {rows[-1]['rows']:,} / {rows[0]['rows']:,} rows: **{ratio:.2f}x** "
                      f"(bar: <= 1.5x: **{'yes' if ratio <= 1.5 else 'NO'}**)."]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
