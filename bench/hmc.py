"""DHMCN heads on the public HMC benchmark data sets (FunCat / GO yeast, Diatoms, Enron, ImCLEF07).

The heads of :mod:`models.dhmcn` are trained standalone on the data sets' feature vectors, under
C-HMCNN's protocol (``../shared/data/hmc/README.md``):

1. :func:`hierarchy.arff.load_hmc_dataset` + ``standardize()`` (one-hot nominals; the per-file mean
   fill quirk; mean imputation and standardisation fitted on train+valid, or train for the
   "others").
2. **Epoch selection** on validation: train on train, score validation AU(PRC) after every epoch,
   stop after ``patience`` epochs without a gain; the best epoch wins (the "others" have no valid
   file: 30 % of train is split off, ``train_test_split(test_size=0.3, random_state=seed)`` as
   C-HMCNN). With ``--select-seeds K`` the median over K selection seeds is used.
3. **Final runs**: for every seed, retrain on train+valid for the chosen number of epochs and
   score the test set once: AU(PRC) as C-HMCNN computes it — micro average precision over the
   non-root classes (``CHMCNN_SKIP`` excluded) of the ancestor-closed labels
   (:func:`hierarchy.metrics.auprc_micro`), on the head's final ``prob``.

One recipe (:class:`Recipe`) for every data set — nothing is set per data set. Heads:
``dhmcn_v1`` (HMCN-F style), ``dhmcn_v2`` (dense), ``dhmcn_v3`` (dense + cascade), and ``+mc``
appended to any of them for C-HMCNN's max-constraint module and MCLoss (default ``dhmcn_v2+mc``).

Prints a table beside the published C-HMCNN(h) and HMCN-F figures and the runtime; the last line
printed is one JSON object::

    {"dataset": "cellcycle_FUN", "dhmcn_v1": {"auprc_mean": .., "auprc_std": .., ...}, ...}

(with several ``--data`` directories, one such line per data set, the last one last).

Usage::

    python bench/hmc.py --data ../shared/data/hmc/cellcycle_FUN [--seeds 5] [--heads dhmcn_v1,dhmcn_v3+mc]
        [--max-minutes 10] [--threads 1] [--json-out FILE]

``--data`` takes data set directories, or a directory of them (every sub-directory with a train
and a test ``.arff`` is run). Data live outside the repo: relative names are looked up under
``$VTAG_SHARED_DATA/hmc`` (default ``../shared/data/hmc``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

_THREADS = "1"
for _i, _a in enumerate(sys.argv):  # BLAS pools must be sized before numpy/torch load
    if _a == "--threads" and _i + 1 < len(sys.argv):
        _THREADS = sys.argv[_i + 1]
    elif _a.startswith("--threads="):
        _THREADS = _a.split("=", 1)[1]
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hierarchy.arff import HMCDataset, load_hmc_dataset  # noqa: E402

SHARED_DATA = Path(os.environ.get("VTAG_SHARED_DATA", REPO.parent / "shared" / "data"))

DEFAULT_HEADS = ("dhmcn_v1", "dhmcn_v2", "dhmcn_v3", "dhmcn_v2+mc")

#: Published test AU(PRC) (README of ../shared/data/hmc): C-HMCNN(h) (verified) and HMCN-F.
PUBLISHED: dict[str, tuple[float, float]] = {
    "cellcycle_FUN": (0.255, 0.252), "derisi_FUN": (0.195, 0.193), "eisen_FUN": (0.306, 0.298),
    "expr_FUN": (0.302, 0.301), "gasch1_FUN": (0.286, 0.284), "gasch2_FUN": (0.258, 0.254),
    "seq_FUN": (0.292, 0.291), "spo_FUN": (0.215, 0.211),
    "cellcycle_GO": (0.413, 0.400), "derisi_GO": (0.370, 0.369), "eisen_GO": (0.455, 0.440),
    "expr_GO": (0.447, 0.452), "gasch1_GO": (0.436, 0.428), "gasch2_GO": (0.414, 0.465),
    "seq_GO": (0.446, 0.447), "spo_GO": (0.382, 0.376),
    "diatoms_others": (0.758, 0.530), "enron_others": (0.756, 0.724),
    "imclef07a_others": (0.956, 0.950), "imclef07d_others": (0.927, 0.920),
}


@dataclass(frozen=True)
class Recipe:
    """The one training recipe for every data set and head (``head`` keys go to ``create_head``)."""

    hidden: int = 128
    local_hidden: int = 64
    dense_fan_in: int = 512  # dense heads (v2/v3): hidden <= this / n_levels (GO: 14 levels -> 36)
    dropout: float = 0.5
    beta: float = 0.5
    lr: float = 5e-3
    weight_decay: float = 1e-5
    batch: int = 256
    max_epochs: int = 100
    patience: int = 5
    min_epochs: int = 3
    tolerance: float = 0.001  # epochs = the first epoch within this (absolute) of the best valid AU(PRC)
    widths: tuple[int, ...] = (1, 2)  # width multipliers searched on validation (hidden, local, fan-in)
    ema_epochs: float = 2.0  # evaluate an exponential moving average of the weights (horizon in epochs; 0 = off)
    prior_init: bool = True  # output biases start at the logit of each class's training frequency
    valid_fraction: float = 0.3  # held out of train when there is no valid file ("others")

    def scaled(self, width: int) -> Recipe:
        """The recipe with ``hidden``, ``local_hidden`` and ``dense_fan_in`` times ``width``."""
        return replace(self, hidden=self.hidden * width, local_hidden=self.local_hidden * width,
                       dense_fan_in=self.dense_fan_in * width)

    def head_cfg(self, head: str, n_levels: int = 1) -> dict:
        """``create_head`` config. Dense heads concatenate every level's activation into the global
        output (``n_levels · hidden`` inputs to an ``N``-wide layer), so their width is capped at
        ``dense_fan_in / n_levels`` (at least 32): one rule that keeps deep DAGs affordable."""
        name, _, flag = head.partition("+")
        if flag not in ("", "mc"):
            raise ValueError(f"unknown head suffix in {head!r} (only '+mc')")
        hidden, local = self.hidden, self.local_hidden
        if name in ("dhmcn_v2", "dhmcn_v3"):
            hidden = min(hidden, max(32, self.dense_fan_in // max(1, n_levels)))
            local = min(local, max(16, hidden // 2))
        return {"name": name, "hidden": hidden, "local_hidden": local,
                "dropout": self.dropout, "beta": self.beta, "max_constraint": flag == "mc"}


# ---------------------------------------------------------------------------------------- metric
def auprc(Y: np.ndarray, S: np.ndarray, mask: np.ndarray) -> float:
    """C-HMCNN's AU(PRC): micro average precision over the classes in ``mask [N]``.
    ``Y [B, N]`` bool ancestor-closed, ``S [B, N]`` scores."""
    try:
        from hierarchy.metrics import auprc_micro
    except ImportError:  # pragma: no cover - metrics module absent
        from sklearn.metrics import average_precision_score

        return float(average_precision_score(Y[:, mask], S[:, mask], average="micro"))
    return auprc_micro(Y[:, mask], S[:, mask])


def auprc_binned(Y: np.ndarray, S: np.ndarray, mask: np.ndarray, bins: int = 4096) -> float:
    """Fast O(B·N) approximation of :func:`auprc` (scores bucketed into ``bins`` equal steps of
    [0, 1]); used only for the per-epoch validation curve."""
    y = Y[:, mask].ravel()
    b = np.clip((S[:, mask].ravel() * bins).astype(np.int64), 0, bins - 1)
    pos = np.bincount(b, weights=y.astype(np.float64), minlength=bins)[::-1]
    tot = np.bincount(b, minlength=bins)[::-1].astype(np.float64)
    tp, n = np.cumsum(pos), np.cumsum(tot)
    if tp[-1] == 0:
        return 0.0
    keep = tot > 0
    return float(np.sum((pos[keep] / tp[-1]) * (tp[keep] / n[keep])))


# ---------------------------------------------------------------------------------------- training
def _head(recipe: Recipe, head: str, spec, in_dim: int, seed: int):
    import torch

    from models.dhmcn import create_head

    torch.manual_seed(seed)
    return create_head(recipe.head_cfg(head, spec.n_levels), spec, in_dim)


def init_output_bias(model, Y: np.ndarray) -> None:
    """Set the output biases to the logit of the class frequencies of ``Y [B, N]`` (smoothed), so that
    training starts from the marginals: ``global_out`` over all nodes, each level's local output over
    its nodes (in the head's level order)."""
    import torch

    p = (Y.sum(axis=0) + 0.5) / (len(Y) + 1.0)
    logit = torch.as_tensor(np.log(p / (1.0 - p)), dtype=torch.float32)
    with torch.no_grad():
        if hasattr(model, "global_out"):
            model.global_out.bias.copy_(logit)
        if hasattr(model, "local"):
            perm = model.structure.level_perm_inv.argsort()  # position in the level concat -> node
            start = 0
            for layer in model.local:
                out = layer[-1]
                out.bias.copy_(logit[perm[start: start + out.out_features]])
                start += out.out_features


def train_head(recipe: Recipe, head: str, spec, X: np.ndarray, Y: np.ndarray, seed: int,
               epochs: int, val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
               deadline: float | None = None):
    """Train a fresh head on ``X [B, D]``, ``Y [B, N]`` for up to ``epochs`` epochs.

    With ``val = (Xv, Yv, mask)`` the validation AU(PRC) is scored after every epoch and training
    stops ``recipe.patience`` epochs after the best. Returns ``(head, curve)`` where ``curve`` is the
    list of per-epoch validation scores (empty without ``val``). With ``recipe.ema_epochs`` the
    returned (and validated) head holds an exponential moving average of the weights, updated after
    every step with a horizon of that many epochs.
    """
    import copy

    import torch

    model = _head(recipe, head, spec, X.shape[1], seed)
    if recipe.prior_init:
        init_output_bias(model, Y)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    g = torch.Generator().manual_seed(seed)
    ema, params, ema_params, decay = model, [], [], 0.0
    if recipe.ema_epochs > 0:
        ema = copy.deepcopy(model)
        params, ema_params = list(model.parameters()), list(ema.parameters())
        steps_per_epoch = max(1, len(X) // recipe.batch)
        decay = 1.0 - 1.0 / max(1.0, recipe.ema_epochs * steps_per_epoch)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    Yt = torch.as_tensor(Y, dtype=torch.float32)
    Xv = torch.as_tensor(val[0], dtype=torch.float32) if val is not None else None
    curve: list[float] = []
    best, since = -1.0, 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(Xt), generator=g)
        for i in range(0, len(Xt), recipe.batch):
            idx = perm[i: i + recipe.batch]
            if idx.numel() < 2:  # batch-size-1 tails add noise only
                continue
            loss = model.loss(model(Xt[idx]), Yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema_params:
                with torch.no_grad():
                    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        if val is not None:
            score = auprc_binned(val[1], predict(ema, Xv), val[2])
            curve.append(score)
            if score > best + 1e-5:
                best, since = score, 0
            else:
                since += 1
            if since >= recipe.patience and len(curve) >= recipe.min_epochs:
                break
        if deadline is not None and time.process_time() > deadline:
            break
    return ema, curve


def pick_epoch(curve: list[float], tolerance: float) -> int:
    """1-based: the first epoch whose validation score is within ``tolerance`` (absolute) of the
    best — the plateau's start, cheaper to retrain and no worse within the noise."""
    c = np.asarray(curve)
    return int(np.flatnonzero(c >= c.max() - tolerance)[0]) + 1


def predict(model, X, batch: int = 2048) -> np.ndarray:
    """``X [B, D]`` (array or tensor) -> ``prob [B, N]`` float32 numpy, eval mode, no grad."""
    import torch

    model.eval()
    X = torch.as_tensor(X, dtype=torch.float32)
    with torch.no_grad():
        return torch.cat([model(X[i: i + batch])["prob"].float() for i in range(0, len(X), batch)]).numpy()


def selection_split(ds: HMCDataset, recipe: Recipe, seed: int):
    """``(Xtr, Ytr, Xva, Yva)`` for epoch selection: the valid file, or 30 % of train (seeded)."""
    if ds.valid is not None:
        return ds.train.X, ds.train.Y, ds.valid.X, ds.valid.Y
    from sklearn.model_selection import train_test_split

    Xtr, Xva, Ytr, Yva = train_test_split(ds.train.X, ds.train.Y, test_size=recipe.valid_fraction, random_state=seed)
    return Xtr, Ytr, Xva, Yva


def _select(recipe: Recipe, head: str, spec, ds: HMCDataset, mask: np.ndarray, select_seeds: int,
            deadline: float | None) -> tuple[int, float, int]:
    """Epoch selection of one head and recipe: ``(epochs, mean best valid score, epochs run)``."""
    best_epochs, val_scores, run = [], [], 0
    for s in range(select_seeds):
        Xtr, Ytr, Xva, Yva = selection_split(ds, recipe, s)
        _, curve = train_head(recipe, head, spec, Xtr, Ytr, s, recipe.max_epochs, val=(Xva, Yva, mask),
                              deadline=deadline)
        best_epochs.append(pick_epoch(curve, recipe.tolerance))
        val_scores.append(max(curve))
        run += len(curve)
    return int(round(statistics.median(best_epochs))), float(np.mean(val_scores)), run


def run_dataset(ds: HMCDataset, heads: list[str], seeds: int, recipe: Recipe, select_seeds: int = 1,
                max_minutes: float | None = None, log=print) -> dict:
    """Width search + epoch selection + final runs of every head on one (standardized) data set.

    Per head: for each width multiplier of ``recipe.widths`` (while the projected time fits the
    head's share of the budget), an epoch-selection run; the width with the best validation score
    wins; then ``seeds`` final runs on train+valid. The budget (``max_minutes``) is counted in CPU
    seconds of this process (= wall time on an otherwise idle machine with one thread); past it, the
    remaining seeds of a head are skipped (``n_seeds`` says how many ran).

    Returns ``{"dataset", "<head>": {"auprc_mean", "auprc_std", "auprc", "epochs", "width", "hidden",
    "valid_auprc", "n_seeds", "seconds", "cpu_seconds"}, "seconds", "cpu_seconds", "recipe",
    "published"}``.
    """
    from models.dhmcn import HierarchySpec

    clock = time.process_time
    t0, c0 = time.monotonic(), clock()
    deadline = c0 + 60.0 * max_minutes if max_minutes else None
    h = ds.hierarchy
    spec = HierarchySpec.from_ancestor_matrix(h.R)
    mask = h.eval_mask
    X_all = np.concatenate([ds.train.X] + ([ds.valid.X] if ds.valid is not None else []))
    Y_all = np.concatenate([ds.train.Y] + ([ds.valid.Y] if ds.valid is not None else []))
    n_sel = len(ds.train) if ds.valid is not None else int(round(len(ds.train) * (1 - recipe.valid_fraction)))
    out: dict = {"dataset": ds.name}
    for k, head in enumerate(heads):
        th, ch = time.monotonic(), clock()
        # each head gets an equal share of what is left of the budget
        head_deadline = None if deadline is None else ch + (deadline - ch) / (len(heads) - k)
        cands = []  # (valid, -width, epochs, width)
        for w in recipe.widths:
            r = recipe.scaled(w)
            tw = clock()
            epochs, val, run = _select(r, head, spec, ds, mask, select_seeds, head_deadline)
            cands.append((val, -w, epochs, w))
            per_epoch = (clock() - tw) / max(1, run)
            # go wider only if the next selection and the final runs at that width (assumed to cost
            # ~width-proportionally more per epoch) still fit this head's share of the budget
            grow = 2.0
            final_next = grow * per_epoch * epochs * seeds * len(X_all) / max(1, n_sel)
            if head_deadline is not None and clock() + grow * per_epoch * run + final_next > head_deadline:
                break
        val, _, epochs, width = max(cands)
        r = recipe.scaled(width)
        t_sel = clock() - ch
        scores = []
        for s in range(seeds):
            if scores and head_deadline is not None and clock() > head_deadline:
                log(f"  {head}: time budget reached after {len(scores)} of {seeds} seeds")
                break
            model, _ = train_head(r, head, spec, X_all, Y_all, s, epochs)
            scores.append(auprc(ds.test.Y, predict(model, ds.test.X), mask))
        sec, cpu = time.monotonic() - th, clock() - ch
        out[head] = {
            "auprc_mean": float(np.mean(scores)),
            "auprc_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
            "auprc": [round(x, 5) for x in scores],
            "epochs": epochs, "width": width, "hidden": r.head_cfg(head, spec.n_levels)["hidden"],
            "valid_auprc": round(val, 5), "valid_by_width": {c[3]: round(c[0], 5) for c in cands},
            "n_seeds": len(scores), "seconds": round(sec, 1), "cpu_seconds": round(cpu, 1),
            "select_cpu_seconds": round(t_sel, 1),
        }
        log(f"  {head:14s} width x{width} (hidden {out[head]['hidden']}) epochs {epochs:3d} "
            f"(valid {val:.4f}; by width {out[head]['valid_by_width']})  test AU(PRC) "
            f"{out[head]['auprc_mean']:.4f} ± {out[head]['auprc_std']:.4f} over {len(scores)} seeds  "
            f"{sec:6.1f}s wall, {cpu:6.1f}s cpu")
    out["seconds"] = round(time.monotonic() - t0, 1)
    out["cpu_seconds"] = round(clock() - c0, 1)
    pub = PUBLISHED.get(ds.name)
    out["published"] = {"C-HMCNN": pub[0], "HMCN-F": pub[1]} if pub else None
    out["recipe"] = asdict(recipe)
    return out


# ---------------------------------------------------------------------------------------- report
def format_table(result: dict, heads: list[str]) -> str:
    pub = result.get("published") or {}
    lines = [f"| {result['dataset']} | AU(PRC) mean ± std | epochs | vs HMCN-F | vs C-HMCNN |",
             "|---|---|---|---|---|"]
    for head in heads:
        r = result[head]
        d = [f"{r['auprc_mean'] - pub[k]:+.3f}" if k in pub else "–" for k in ("HMCN-F", "C-HMCNN")]
        lines.append(f"| {head} | {r['auprc_mean']:.3f} ± {r['auprc_std']:.3f} | {r['epochs']} | {d[0]} | {d[1]} |")
    for k in ("HMCN-F", "C-HMCNN"):
        if k in pub:
            lines.append(f"| {k} (published) | {pub[k]:.3f} | | | |")
    lines.append(f"runtime {result['seconds']:.0f} s wall, {result['cpu_seconds']:.0f} s cpu (this process)")
    return "\n".join(lines)


def dataset_dirs(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if not path.exists() and not path.is_absolute():
            path = SHARED_DATA / "hmc" / p
        if not path.is_dir():
            raise SystemExit(f"no such data set directory: {p}")
        arffs = [x.name.lower() for x in path.glob("*.arff")]
        if arffs:
            out.append(path)
        else:
            subs = sorted(d for d in path.iterdir() if d.is_dir()
                          and any("train" in x.name.lower() for x in d.glob("*.arff"))
                          and any("test" in x.name.lower() for x in d.glob("*.arff")))
            if not subs:
                raise SystemExit(f"{path}: no .arff data set in it")
            out.extend(subs)
    return out


def _arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="data set directories (or a directory of them)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--select-seeds", type=int, default=1, help="selection runs per head (median epoch)")
    ap.add_argument("--heads", default=",".join(DEFAULT_HEADS), help="comma-separated; '+mc' = max-constraint")
    ap.add_argument("--max-minutes", type=float, default=10.0, help="time budget per data set (0 = none)")
    ap.add_argument("--threads", type=int, default=int(_THREADS), help="torch threads (1 is fastest on a busy box)")
    ap.add_argument("--no-file-mean-quirk", action="store_true", help="skip C-HMCNN's per-file NaN mean fill")
    ap.add_argument("--widths", help="comma-separated width multipliers to search (default 1,2)")
    ap.add_argument("--json-out", help="also write the results (a list, one per data set) here")
    for f in ("hidden", "dropout", "lr", "batch", "max_epochs", "patience"):
        ap.add_argument(f"--{f.replace('_', '-')}", type=type(getattr(Recipe, f)), default=None,
                        help=f"override the recipe's {f} (default {getattr(Recipe, f)})")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    over = {f: getattr(args, f) for f in ("hidden", "dropout", "lr", "batch", "max_epochs", "patience")
            if getattr(args, f) is not None}
    if args.widths:
        over["widths"] = tuple(int(w) for w in args.widths.split(","))
    recipe = replace(Recipe(), **over)
    if "hidden" in over:
        recipe = replace(recipe, local_hidden=max(1, recipe.hidden // 2))
    for h in heads:
        recipe.head_cfg(h)  # fail early on a bad name
    results = []
    for d in dataset_dirs(args.data):
        t, c = time.monotonic(), time.process_time()
        ds = load_hmc_dataset(d).standardize(file_mean_quirk=not args.no_file_mean_quirk)
        h = ds.hierarchy
        print(f"{ds.name}: {h.kind}, {int(h.eval_mask.sum())} classes, depth {h.depth}, in-dim {ds.in_dim}, "
              f"train {len(ds.train)} valid {len(ds.valid) if ds.valid is not None else '-'} test {len(ds.test)} "
              f"(loaded in {time.monotonic() - t:.1f}s)", flush=True)
        res = run_dataset(ds, heads, args.seeds, recipe, args.select_seeds, args.max_minutes or None,
                          log=lambda m: print(m, flush=True))
        res["seconds"] = round(time.monotonic() - t, 1)
        res["cpu_seconds"] = round(time.process_time() - c, 1)
        print(format_table(res, heads), flush=True)
        results.append(res)
        if args.json_out:
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_out).write_text(json.dumps(results, indent=1))
        summary = {"dataset": res["dataset"]}
        for head in heads:
            summary[head] = {k: res[head][k] for k in ("auprc_mean", "auprc_std")}
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
