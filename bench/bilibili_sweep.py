"""Choose vtag model settings on validation: config variants × seeds on one Bilibili-format split.

Each variant is a set of overrides deep-merged onto the model config ``bench/bilibili.py`` uses
(``conf/model/cpu-small.yaml``, image off, ``--head``). Every (variant, seed) run trains through
:func:`vtag.models.training.train` (its own uploader-grouped validation split of the training side) and
predicts the test side through :class:`vtag.models.predictor.Predictor`, exactly as ``bench/bilibili.py``
does. Variants are ranked by their **validation** figures (mean over seeds); the test figures are
printed beside them for the record, not for choosing.

Variants file (JSON): ``{"name": {overrides}, ...}``, e.g.
``{"base": {}, "ls01": {"loss": {"leaf_smoothing": 0.1}}, "bs32": {"train": {"batch_size": 32}}}``.

Usage::

    python bench/bilibili_sweep.py --variants FILE [--data FILE | --train FILE --test FILE]
        [--head flat] [--seeds 3] [--first-seed 0] [--workers N] [--threads 1] [--device cpu|cuda]
        [--max-minutes M] [--out runs.jsonl]

Runs go seed-major (every variant's seed 0 first), so a sweep cut short still compares all
variants. Each finished run is one JSON line (printed, and appended to ``--out``); the last line
printed is one JSON object ``{variant: {"valid_leaf_acc", "valid_hf1", "leaf_acc", "hf1", "runs"}}``
(means over the finished seeds).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import bilibili as B  # noqa: E402  (before numpy: sizes the BLAS pools from --threads; puts the repo on sys.path)
import numpy as np  # noqa: E402

METRICS = ("valid_leaf_acc", "valid_hf1", "leaf_acc", "level1_acc", "hf1")


def deep_merge(base: dict, overrides: dict) -> dict:
    """A copy of ``base`` with ``overrides`` merged in, mapping by mapping."""
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        out[k] = deep_merge(out.get(k) or {}, v) if isinstance(v, dict) else copy.deepcopy(v)
    return out


def load_variants(path: str) -> dict[str, dict]:
    variants = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(variants, dict) or not variants or not all(isinstance(v, dict) for v in variants.values()):
        raise SystemExit(f"{path}: expected a non-empty JSON object {{name: {{overrides}}}}")
    return variants


def run_variant(name: str, overrides: dict, seed: int) -> dict:
    """Train one variant with one seed on the split in ``bilibili._CTX``: its validation (training
    side) and test figures."""
    from vtag.models.factory import resolve_config

    c, opts = B._CTX, B._CTX["opts"]
    t = time.monotonic()
    cfg = deep_merge(B.vtag_config(Path(opts["model_config"]), opts["head"]), overrides)
    resolve_config(cfg)  # a typo in a model section fails here
    leaf, res, _ = B.train_and_predict(cfg, c["taxonomy"], c["train"], c["test"], seed, device=opts["device"],
                                       max_minutes=opts["max_minutes"], label=f"sweep-{name}")
    m = B.score(c["taxonomy"], c["true_idx"], leaf)
    return {"variant": name, "seed": seed, "epochs": res.epochs_run, "best_epoch": res.best_epoch,
            "stopped": res.stopped, "valid_leaf_acc": round(float(res.metrics["leaf_acc"]), 4),
            "valid_hf1": round(float(res.metrics["hf1"]), 4), **{k: round(v, 4) for k, v in m.items()},
            "seconds": round(time.monotonic() - t, 1)}


def summarise(runs: list[dict], order: list[str]) -> dict[str, dict]:
    """Mean of each metric over a variant's finished seeds."""
    out = {}
    for name in order:
        rs = [r for r in runs if r["variant"] == name]
        if rs:
            out[name] = {k: round(float(np.mean([r[k] for r in rs])), 4) for k in METRICS} | {"runs": len(rs)}
    return out


def format_summary(summary: dict[str, dict]) -> str:
    lines = ["| variant | runs | valid leaf | valid hF1 | test leaf | test hF1 |", "|---|---|---|---|---|---|"]
    ranked = sorted(summary.items(), key=lambda kv: -(kv[1]["valid_leaf_acc"] + kv[1]["valid_hf1"]))
    for name, s in ranked:
        lines.append(f"| {name} | {s['runs']} | {s['valid_leaf_acc']:.4f} | {s['valid_hf1']:.4f} | "
                     f"{s['leaf_acc']:.4f} | {s['hf1']:.4f} |")
    return "\n".join(lines)


def _arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", required=True, help="JSON file {name: {config overrides}}")
    ap.add_argument("--data", default=str(B.DEFAULT_DATA), help="one JSONL file, split by uploader")
    ap.add_argument("--train", help="training JSONL (with --test: no split)")
    ap.add_argument("--test", help="test JSONL")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--taxonomy", default=str(B.DEFAULT_TAXONOMY))
    ap.add_argument("--model-config", default=str(B.DEFAULT_MODEL))
    ap.add_argument("--head", default="flat", help="head name (+mc allowed), as bench/bilibili.py's vtag_<head>")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    ap.add_argument("--max-minutes", type=float, default=None, help="time budget per training run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=int(B._THREADS))
    ap.add_argument("--out", help="append each run's JSON line here")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)
    from vtag.hierarchy.taxonomy import Taxonomy

    variants = load_variants(args.variants)
    train, test, dropped, _ = B.load_split(args, Taxonomy.load(args.taxonomy))
    print(f"train {len(train)} rows, test {len(test)} rows, {dropped} rows dropped (missing or unknown tid); "
          f"{len(variants)} variants × {args.seeds} seeds "
          f"on {args.device}", flush=True)
    opts = {"model_config": args.model_config, "head": args.head, "device": args.device, "threads": args.threads,
            "max_minutes": args.max_minutes}
    tasks = [(name, seed) for seed in range(args.first_seed, args.first_seed + args.seeds) for name in variants]
    runs: list[dict] = []
    failed = 0
    t0 = time.monotonic()

    def finish(name: str, seed: int, r: dict | None, err: BaseException | None) -> None:
        nonlocal failed
        if err is not None:
            failed += 1
            print(json.dumps({"variant": name, "seed": seed, "error": f"{type(err).__name__}: {err}"}), flush=True)
            return
        runs.append(r)
        line = json.dumps(r)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    if args.workers <= 1:
        B._init_worker(args.taxonomy, train, test, None, opts)
        for name, seed in tasks:
            try:
                finish(name, seed, run_variant(name, variants[name], seed), None)
            except Exception as e:  # noqa: BLE001 - one variant's failure must not lose the others
                finish(name, seed, None, e)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=min(args.workers, len(tasks)), mp_context=mp.get_context("spawn"),
                                 initializer=B._init_worker, initargs=(args.taxonomy, train, test, None, opts)) as ex:
            futs = {ex.submit(run_variant, name, variants[name], seed): (name, seed) for name, seed in tasks}
            for f in as_completed(futs):
                err = f.exception()
                finish(*futs[f], None if err else f.result(), err)

    summary = summarise(runs, list(variants))
    print("\n" + format_summary(summary))
    print(f"total {time.monotonic() - t0:.0f}s, {len(runs)} runs, {failed} failed", flush=True)
    print(json.dumps(summary), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
