"""Training time per epoch on coverless rows: the demo model (conf/model/demo.yaml, the former
cpu-small: no TF-IDF SVM) before and after issue 20.

``old`` = ``image.skip_absent: false`` (the backbone runs on a blank image for every row), no
jieba token cache and the tokenizer looked up per row (``TextFeaturizer.LOOKUP_ONCE``), as before; ``new`` = the defaults (no backbone work for rows without a cover; tokens cached
on the process's jieba tokenizer, emptied before each run so every run starts cold). The cost of one
epoch is measured as the difference between a 2-epoch and a 1-epoch run of :func:`vtag.models.train.train`
(same seed, data and config), so the one-off work (vocabulary, n-gram counts, bundle writing) drops
out; it still holds the per-epoch validation. A warm-up run first pays the process's imports and
jieba's start; then old and new runs alternate, ``--repeats`` times; the medians are reported. Writes ``bench/results/predict_speed_train.md``.

Usage: ``python bench/train_speed.py [--rows 1024] [--repeats 2] [--threads 2]``
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results" / "predict_speed_train.md"


def timed_train(cfg: dict, tax, frame, out: Path, epochs: int, legacy: bool) -> float:
    """Seconds of one ``train`` run (``legacy``: the path before issue 20)."""
    from vtag.models.text import TextFeaturizer, get_tokenizer, taxonomy_words
    from vtag.models.train import train

    tok = get_tokenizer(taxonomy_words(tax))
    tok.__dict__.pop("_vtag_token_cache", None)  # every run starts cold
    cfg = {**cfg, "image": {**cfg["image"], "skip_absent": not legacy},
           "train": {**cfg["train"], "epochs": epochs, "min_epochs": 1, "patience": 99}}
    before = TextFeaturizer.TOKEN_CACHE_SIZE
    TextFeaturizer.TOKEN_CACHE_SIZE = 0 if legacy else before
    TextFeaturizer.LOOKUP_ONCE = not legacy
    try:
        t0 = time.perf_counter()
        train(cfg, tax, frame, out, progress=False, device="cpu")
        return time.perf_counter() - t0
    finally:
        TextFeaturizer.TOKEN_CACHE_SIZE, TextFeaturizer.LOOKUP_ONCE = before, True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--config", default=str(REPO / "conf" / "model" / "demo.yaml"))
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()

    import torch

    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.data import toy_labeled_frame
    from vtag.models.train import load_model_config

    torch.set_num_threads(args.threads)
    tax = Taxonomy.load(REPO / "conf" / "taxonomy" / "demo-v1.yaml")
    frame = toy_labeled_frame(tax, n=args.rows, seed=0)
    frame["cover"] = None
    cfg = load_model_config(args.config)
    cfg.setdefault("image", {})
    per_epoch: dict[str, list[float]] = {"old": [], "new": []}
    totals: dict[str, list[float]] = {"old": [], "new": []}
    import warnings

    warnings.filterwarnings("ignore", message="every training row lacks a cover")
    with tempfile.TemporaryDirectory(prefix="vtag-train-speed-") as tmp:
        t0 = time.perf_counter()  # warm-up: imports, jieba's dictionary, timm — paid once per process
        timed_train(cfg, tax, frame.iloc[:128], Path(tmp) / "warmup", 1, False)
        print(f"warm-up {time.perf_counter() - t0:.1f} s", flush=True)
        for rep in range(args.repeats):
            for mode in ("old", "new"):
                legacy = mode == "old"
                t1 = timed_train(cfg, tax, frame, Path(tmp) / f"{mode}{rep}a", 1, legacy)
                t2 = timed_train(cfg, tax, frame, Path(tmp) / f"{mode}{rep}b", 2, legacy)
                per_epoch[mode].append(round(t2 - t1, 2))
                totals[mode].append(round(t2, 2))
                print(f"repeat {rep} {mode}: 1 epoch {t1:.1f} s, 2 epochs {t2:.1f} s -> {t2 - t1:.1f} s/epoch",
                      flush=True)
    med = {m: statistics.median(v) for m, v in per_epoch.items()}
    ratio = med["old"] / med["new"] if med["new"] > 0 else float("nan")
    # the whole 2-epoch runs (one-off fit included, so a lower bound of the per-epoch gain), less
    # sensitive to a disturbed 1-epoch run on a shared machine
    whole = statistics.median(totals["old"]) / statistics.median(totals["new"])
    print(f"median s/epoch: old {med['old']:.2f}, new {med['new']:.2f}, old/new {ratio:.2f}")
    print(f"median 2-epoch run: old/new {whole:.2f}")
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    cmd = "python bench/train_speed.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        "# Training time per epoch on coverless rows (the demo model, conf/model/demo.yaml)", "",
        f"Command: `{cmd.strip()}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores visible, torch threads = {args.threads}, load average "
        f"at the end {load:.1f} (other work shared the CPU). Rows: {args.rows} toy rows of demo-v1.yaml without "
        f"covers ({Path(args.config).name}, its training settings). One epoch = (2-epoch run) - (1-epoch run); "
        "old and new alternate; medians over the repeats.", "",
        "| path | s/epoch (median) | s/epoch runs | 2-epoch runs (s) |", "|---|---|---|---|",
        f"| old (image.skip_absent false, no token cache, tokenizer looked up per row) | {med['old']:.2f} | {per_epoch['old']} | {totals['old']} |",
        f"| new (defaults) | {med['new']:.2f} | {per_epoch['new']} | {totals['new']} |", "",
        f"Old / new per epoch: **{ratio:.2f}x** (target: at least 2x). Old / new of the whole 2-epoch runs "
        f"(the one-off vocabulary and n-gram fit included, a lower bound): **{whole:.2f}x**.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
