"""DHMCN heads on the public HMC benchmark data sets (FunCat / GO yeast, Diatoms, Enron, ImCLEF07).

The heads of :mod:`vtag.models.dhmcn` are trained standalone on the data sets' feature vectors, under
C-HMCNN's protocol (``../shared/data/hmc/README.md``):

1. :func:`hmc_arff.load_hmc_dataset` + ``standardize()`` (one-hot nominals; the per-file mean
   fill quirk; mean imputation and standardisation fitted on train+valid, or train for the
   "others").
2. **Epoch selection** on validation: train on train, score validation AU(PRC) after every epoch,
   stop after ``patience`` epochs without a gain; the best epoch wins (the "others" have no valid
   file: 30 % of train is split off, ``train_test_split(test_size=0.3, random_state=seed)`` as
   C-HMCNN). With ``--select-seeds K`` the median over K selection seeds is used.
3. **Final runs**: for every seed, retrain on train+valid for the chosen number of epochs and
   score the test set once: AU(PRC) as C-HMCNN computes it — micro average precision over the
   non-root classes (``CHMCNN_SKIP`` excluded) of the ancestor-closed labels
   (:func:`vtag.hierarchy.metrics.auprc_micro`), on the head's final ``prob``.

One recipe (:class:`Recipe`) for every data set — nothing is set per data set. Heads:
``dhmcn_v1`` (HMCN-F style), ``dhmcn_v2`` (dense), ``dhmcn_v3`` (dense + cascade), and ``+mc``
appended to any of them for C-HMCNN's max-constraint module and MCLoss (default ``dhmcn_v2+mc``).

Prints a table beside the published C-HMCNN(h) and HMCN-F figures and the runtime; the last line
printed is one JSON object::

    {"dataset": "cellcycle_FUN", "dhmcn_v1": {"auprc_mean": .., "auprc_std": .., ...}, ...}

(with several ``--data`` directories, one such line per data set, the last one last).

Usage::

    python bench/hmc.py --data ../shared/data/hmc/cellcycle_FUN [--seeds 5] [--heads dhmcn_v1,dhmcn_v3+mc]
        [--max-minutes 10] [--threads 1] [--json-out FILE] [--md-out FILE]
        [--device cuda] [--workers N]

``--device cuda`` trains the heads on the GPU (same recipe; default CPU). ``--md-out`` writes a
Markdown report (command, device, the table beside the published figures), rewritten after every
data set so that a stopped run still leaves what it finished.

**Workers and the time budget.** The budget ``--max-minutes M`` is counted in CPU seconds (= wall
time on an otherwise idle core with ``--threads 1``); a head's next final seed starts only if it
is expected (from the longest seed so far) to end within the head's share, else the remaining seeds
are skipped (``n_seeds`` says how many ran; the width search also stops widening when the
projection does not fit).

- ``--workers 1`` (default): the data sets, and the heads of each, run one after another in this
  process; each data set gets ``M`` minutes, and each head an equal share of what is left of them
  when it starts (a fast head leaves more to the later ones).
- ``--workers N`` (N > 1): the unit of work is one (data set, head) pair; N spawned processes (each
  with ``--threads`` torch threads, all on ``--device``) take them largest data set first
  (``_dataset_cost``), and within a data set the costlier heads first (``+mc``, then v2/v3, then
  the rest). Each head gets a fixed ``M · 60 · W / H`` CPU seconds, ``H`` = the number of heads and
  ``W = min(N, H)``: with 2 workers and 4 heads, 5 CPU minutes per head, so that one data set's four
  heads take at most about ``M`` minutes of wall time on two free cores (a data set may use up to
  ``W · M`` CPU minutes in all). Each worker loads and standardises the data set itself (kept for
  its next head of the same data set). A data set is reported (its table, its JSON line, the
  Markdown report) once its last head is done; its ``seconds`` is the wall time from its first
  head's start (load included) to its last head's end, its ``cpu_seconds`` the heads' sum. A head
  that fails marks its data set failed (its heads not yet started are dropped); the other data
  sets go on.

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
from typing import Callable

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # bench/ holds blas_threads
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blas_threads import size_blas_pools  # noqa: E402

_THREADS = size_blas_pools()  # BLAS pools must be sized before numpy/torch load

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hmc_arff import HMCDataset, load_hmc_dataset  # noqa: E402  (bench/hmc_arff.py)

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
        from vtag.hierarchy.metrics import auprc_micro
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

    from vtag.models.dhmcn import create_head

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
               deadline: float | None = None, device: str = "cpu"):
    """Train a fresh head on ``X [B, D]``, ``Y [B, N]`` for up to ``epochs`` epochs.

    With ``val = (Xv, Yv, mask)`` the validation AU(PRC) is scored after every epoch and training
    stops ``recipe.patience`` epochs after the best. Returns ``(head, curve)`` where ``curve`` is the
    list of per-epoch validation scores (empty without ``val``). With ``recipe.ema_epochs`` the
    returned (and validated) head holds an exponential moving average of the weights, updated after
    every step with a horizon of that many epochs. ``device``: where the head trains ('cpu',
    'cuda', 'cuda:N'); the data are moved there once, the batch order is drawn on the CPU generator
    either way.
    """
    import torch

    from vtag.models.training import WeightAverage

    model = _head(recipe, head, spec, X.shape[1], seed)
    if recipe.prior_init:
        init_output_bias(model, Y)
    dev = torch.device(device)
    model = model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    g = torch.Generator().manual_seed(seed)
    average = WeightAverage(model, recipe.ema_epochs, warmup=False)
    average.set_horizon(max(1, len(X) // recipe.batch))
    ema = average.model if average.model is not None else model
    Xt = torch.as_tensor(X, dtype=torch.float32).to(dev)
    Yt = torch.as_tensor(Y, dtype=torch.float32).to(dev)
    Xv = torch.as_tensor(val[0], dtype=torch.float32).to(dev) if val is not None else None
    curve: list[float] = []
    best, since = -1.0, 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(Xt), generator=g).to(dev)
        for i in range(0, len(Xt), recipe.batch):
            idx = perm[i: i + recipe.batch]
            if idx.numel() < 2:  # batch-size-1 tails add noise only
                continue
            loss = model.loss(model(Xt[idx]), Yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            average.update(model)
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
    dev = next(model.parameters()).device
    X = torch.as_tensor(X, dtype=torch.float32).to(dev)
    with torch.no_grad():
        return torch.cat([model(X[i: i + batch])["prob"].float() for i in range(0, len(X), batch)]).cpu().numpy()


def selection_split(ds: HMCDataset, recipe: Recipe, seed: int):
    """``(Xtr, Ytr, Xva, Yva)`` for epoch selection: the valid file, or 30 % of train (seeded)."""
    if ds.valid is not None:
        return ds.train.X, ds.train.Y, ds.valid.X, ds.valid.Y
    from sklearn.model_selection import train_test_split

    Xtr, Xva, Ytr, Yva = train_test_split(ds.train.X, ds.train.Y, test_size=recipe.valid_fraction, random_state=seed)
    return Xtr, Ytr, Xva, Yva


def _select(recipe: Recipe, head: str, spec, ds: HMCDataset, mask: np.ndarray, select_seeds: int,
            deadline: float | None, device: str = "cpu") -> tuple[int, float, int]:
    """Epoch selection of one head and recipe: ``(epochs, mean best valid score, epochs run)``."""
    best_epochs, val_scores, run = [], [], 0
    for s in range(select_seeds):
        Xtr, Ytr, Xva, Yva = selection_split(ds, recipe, s)
        _, curve = train_head(recipe, head, spec, Xtr, Ytr, s, recipe.max_epochs, val=(Xva, Yva, mask),
                              deadline=deadline, device=device)
        best_epochs.append(pick_epoch(curve, recipe.tolerance))
        val_scores.append(max(curve))
        run += len(curve)
    return int(round(statistics.median(best_epochs))), float(np.mean(val_scores)), run


def _prepare(ds: HMCDataset, recipe: Recipe) -> tuple:
    """What every head of a data set shares: ``(spec, mask, X_all, Y_all, n_sel)`` — the hierarchy
    spec, the evaluation mask, train+valid for the final runs and the selection-train size."""
    from vtag.models.dhmcn import HierarchySpec

    h = ds.hierarchy
    spec = HierarchySpec.from_ancestor_matrix(h.R)
    X_all = np.concatenate([ds.train.X] + ([ds.valid.X] if ds.valid is not None else []))
    Y_all = np.concatenate([ds.train.Y] + ([ds.valid.Y] if ds.valid is not None else []))
    n_sel = len(ds.train) if ds.valid is not None else int(round(len(ds.train) * (1 - recipe.valid_fraction)))
    return spec, h.eval_mask, X_all, Y_all, n_sel


def seeds_within_budget(run_one: Callable[[int], float], seeds: int, deadline: float | None,
                        clock: Callable[[], float] = time.process_time) -> list[float]:
    """``run_one(s)`` for s = 0, 1, ... while the next run is expected to end by ``deadline`` (a
    ``clock()`` value; None = no budget): the first always runs, a later one only if the clock plus the
    longest run so far still fits, so the budget is not overrun by a whole run."""
    scores: list[float] = []
    longest = 0.0
    for s in range(seeds):
        if scores and deadline is not None and clock() + longest > deadline:
            break
        t = clock()
        scores.append(run_one(s))
        longest = max(longest, clock() - t)
    return scores


def run_head(ds: HMCDataset, head: str, seeds: int, recipe: Recipe, select_seeds: int = 1,
             deadline: float | None = None, log=print, device: str = "cpu", prepared: tuple | None = None) -> dict:
    """Width search + epoch selection + final runs of one head on one (standardized) data set.

    For each width multiplier of ``recipe.widths`` (while the projected time fits ``deadline``), an
    epoch-selection run; the width with the best validation score wins; then ``seeds`` final runs on
    train+valid. ``deadline``: a ``time.process_time()`` value of this process (CPU seconds; None =
    no budget) past which the remaining seeds are skipped (``n_seeds`` says how many ran; at least
    one always runs). ``prepared``: :func:`_prepare`'s tuple, if the caller already has it.

    Returns ``{"auprc_mean", "auprc_std", "auprc", "epochs", "width", "hidden", "valid_auprc",
    "valid_by_width", "n_seeds", "seconds", "cpu_seconds", "select_cpu_seconds"}``.
    """
    clock = time.process_time
    th, ch = time.monotonic(), clock()
    spec, mask, X_all, Y_all, n_sel = prepared if prepared is not None else _prepare(ds, recipe)
    cands = []  # (valid, -width, epochs, width)
    for w in recipe.widths:
        r = recipe.scaled(w)
        tw = clock()
        epochs, val, run = _select(r, head, spec, ds, mask, select_seeds, deadline, device)
        cands.append((val, -w, epochs, w))
        per_epoch = (clock() - tw) / max(1, run)
        # go wider only if the next selection and the final runs at that width (assumed to cost
        # ~width-proportionally more per epoch) still fit this head's budget
        grow = 2.0
        final_next = grow * per_epoch * epochs * seeds * len(X_all) / max(1, n_sel)
        if deadline is not None and clock() + grow * per_epoch * run + final_next > deadline:
            break
    val, _, epochs, width = max(cands)
    r = recipe.scaled(width)
    t_sel = clock() - ch
    def final_run(s: int) -> float:
        model, _ = train_head(r, head, spec, X_all, Y_all, s, epochs, device=device)
        return auprc(ds.test.Y, predict(model, ds.test.X), mask)

    scores = seeds_within_budget(final_run, seeds, deadline, clock)
    if len(scores) < seeds:
        log(f"  {head}: time budget reached after {len(scores)} of {seeds} seeds")
    sec, cpu = time.monotonic() - th, clock() - ch
    out = {
        "auprc_mean": float(np.mean(scores)),
        "auprc_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
        "auprc": [round(x, 5) for x in scores],
        "epochs": epochs, "width": width, "hidden": r.head_cfg(head, spec.n_levels)["hidden"],
        "valid_auprc": round(val, 5), "valid_by_width": {c[3]: round(c[0], 5) for c in cands},
        "n_seeds": len(scores), "seconds": round(sec, 1), "cpu_seconds": round(cpu, 1),
        "select_cpu_seconds": round(t_sel, 1),
    }
    log(f"  {head:14s} width x{width} (hidden {out['hidden']}) epochs {epochs:3d} "
        f"(valid {val:.4f}; by width {out['valid_by_width']})  test AU(PRC) "
        f"{out['auprc_mean']:.4f} ± {out['auprc_std']:.4f} over {len(scores)} seeds  "
        f"{sec:6.1f}s wall, {cpu:6.1f}s cpu")
    return out


def merge_heads(name: str, heads: list[str], per_head: dict[str, dict], recipe: Recipe,
                seconds: float, cpu_seconds: float) -> dict:
    """The per-data-set dict from :func:`run_head`'s results (``per_head[head]``): ``{"dataset",
    "<head>": ..., "seconds", "cpu_seconds", "published", "recipe"}`` (heads in ``heads``' order)."""
    out: dict = {"dataset": name}
    for head in heads:
        out[head] = per_head[head]
    out["seconds"] = round(seconds, 1)
    out["cpu_seconds"] = round(cpu_seconds, 1)
    pub = PUBLISHED.get(name)
    out["published"] = {"C-HMCNN": pub[0], "HMCN-F": pub[1]} if pub else None
    out["recipe"] = asdict(recipe)
    return out


def head_budget_s(max_minutes: float | None, n_heads: int, workers: int) -> float | None:
    """CPU seconds each head may use when a data set's heads run in ``workers`` processes at once:
    ``max_minutes · 60 · W / H`` with ``H = n_heads`` and ``W = min(workers, H)`` — the data set's
    heads then take about ``max_minutes`` of wall time on W free cores. None without a budget."""
    if not max_minutes:
        return None
    n = max(1, n_heads)
    return 60.0 * max_minutes * min(max(1, workers), n) / n


def run_dataset(ds: HMCDataset, heads: list[str], seeds: int, recipe: Recipe, select_seeds: int = 1,
                max_minutes: float | None = None, log=print, device: str = "cpu") -> dict:
    """:func:`run_head` for every head of one (standardized) data set, one after another in this
    process, merged by :func:`merge_heads`.

    The budget (``max_minutes``) is counted in CPU seconds of this process (= wall time on an
    otherwise idle machine with one thread); each head gets an equal share of what is left of it
    when it starts; past its share, the remaining seeds of a head are skipped (``n_seeds`` says how
    many ran).

    Returns ``{"dataset", "<head>": {"auprc_mean", "auprc_std", "auprc", "epochs", "width", "hidden",
    "valid_auprc", "n_seeds", "seconds", "cpu_seconds"}, "seconds", "cpu_seconds", "recipe",
    "published"}``.
    """
    clock = time.process_time
    t0, c0 = time.monotonic(), clock()
    deadline = c0 + 60.0 * max_minutes if max_minutes else None
    prepared = _prepare(ds, recipe)
    per_head: dict[str, dict] = {}
    for k, head in enumerate(heads):
        ch = clock()
        # each head gets an equal share of what is left of the budget
        head_deadline = None if deadline is None else ch + (deadline - ch) / (len(heads) - k)
        per_head[head] = run_head(ds, head, seeds, recipe, select_seeds, head_deadline, log=log, device=device,
                                  prepared=prepared)
    return merge_heads(ds.name, heads, per_head, recipe, time.monotonic() - t0, clock() - c0)


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
    lines.append(f"runtime {result['seconds']:.0f} s wall, {result['cpu_seconds']:.0f} s cpu (all its heads)")
    return "\n".join(lines)


def dataset_dirs(paths: list[str], skipped: list[str] | None = None) -> list[Path]:
    """Data set directories named by ``paths`` (a data set, or a directory of them: every
    sub-directory with a train and a test ``.arff``; the others are appended to ``skipped``)."""
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
            if skipped is not None:
                skipped.extend(d.name for d in sorted(path.iterdir())
                               if d.is_dir() and d not in subs and any(d.glob("*.arff")))
            out.extend(subs)
    return out


def _arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="data set directories (or a directory of them)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--select-seeds", type=int, default=1, help="selection runs per head (median epoch)")
    ap.add_argument("--heads", default=",".join(DEFAULT_HEADS), help="comma-separated; '+mc' = max-constraint")
    ap.add_argument("--max-minutes", type=float, default=10.0,
                    help="time budget per data set in CPU minutes (0 = none): with --workers 1 the heads share "
                         "it (each an equal share of what is left); with N > 1 workers each head gets "
                         "max-minutes*60*W/H CPU seconds (H heads, W = min(N, H)), i.e. about max-minutes of "
                         "wall time per data set")
    ap.add_argument("--threads", type=int, default=int(_THREADS), help="torch threads (1 is fastest on a busy box)")
    ap.add_argument("--device", default="cpu", help="where the heads train: cpu (default), cuda, cuda:N")
    ap.add_argument("--workers", type=int, default=1,
                    help="(data set, head) pairs run in this many spawned processes at once, largest data "
                         "set first (each with --threads threads; they share the --device); a data set is "
                         "reported when its last head is done; 1 = everything in this process, in turn")
    ap.add_argument("--no-file-mean-quirk", action="store_true", help="skip C-HMCNN's per-file NaN mean fill")
    ap.add_argument("--widths", help="comma-separated width multipliers to search (default 1,2)")
    ap.add_argument("--json-out", help="also write the results (a list, one per data set) here")
    ap.add_argument("--md-out", help="also write a Markdown report here (rewritten after every data set)")
    ap.add_argument("--note", help="a line added to the Markdown report (e.g. what ran this command)")
    for f in ("hidden", "dropout", "lr", "batch", "max_epochs", "patience"):
        ap.add_argument(f"--{f.replace('_', '-')}", type=type(getattr(Recipe, f)), default=None,
                        help=f"override the recipe's {f} (default {getattr(Recipe, f)})")
    return ap


def device_description(device: str) -> str:
    """One line naming the hardware the heads ran on (GPU name, or the CPU model and core count)."""
    import platform

    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"{torch.cuda.get_device_name(idx)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {model}, {os.cpu_count()} cores (torch {torch.__version__})"


def _dataset_cost(path: Path) -> float:
    """Rough cost key for scheduling (largest first): rows (all files) × (1 + hierarchy entries / 500)
    — deep, wide DAGs (GO) first, then the many-row sets, then the small trees."""
    rows, entries = 0, 0
    for f in path.glob("*.arff"):
        with open(f, "rb") as fh:
            for line in fh:
                if not entries and line[:10].lower() == b"@attribute" and b" hierarchical " in line.lower():
                    entries = line.count(b",") + 1
                rows += 1
    return rows * (1.0 + entries / 500.0)


def _prefixed(prefix: str):
    """A log function printing ``m`` with ``prefix`` on every line, in one write (pool workers
    share the terminal: a separate newline write could land after another process's line)."""
    def log(m: str) -> None:
        sys.stdout.write("".join(prefix + line + "\n" for line in str(m).splitlines()))
        sys.stdout.flush()

    return log


def _load(path: str, file_mean_quirk: bool, log, device: str) -> HMCDataset:
    """Load and standardise one data set, logging its shape and the load time."""
    t = time.monotonic()
    ds = load_hmc_dataset(Path(path)).standardize(file_mean_quirk=file_mean_quirk)
    h = ds.hierarchy
    log(f"{ds.name}: {h.kind}, {int(h.eval_mask.sum())} classes, depth {h.depth}, in-dim {ds.in_dim}, "
        f"train {len(ds.train)} valid {len(ds.valid) if ds.valid is not None else '-'} test {len(ds.test)} "
        f"(loaded in {time.monotonic() - t:.1f}s) on {device}")
    return ds


def _run_one(path: str, heads: list[str], seeds: int, recipe: Recipe, select_seeds: int,
             max_minutes: float | None, file_mean_quirk: bool, device: str, threads: int,
             prefix: str = "") -> dict:
    """Load, standardise and run one data set, its heads one after another in this process; prints
    its log lines and table, returns :func:`run_dataset`'s dict (with load time, device)."""
    import torch

    torch.set_num_threads(threads)
    log = _prefixed(prefix)
    t, c = time.monotonic(), time.process_time()
    ds = _load(path, file_mean_quirk, log, device)
    res = run_dataset(ds, heads, seeds, recipe, select_seeds, max_minutes, log=log, device=device)
    res["seconds"] = round(time.monotonic() - t, 1)
    res["cpu_seconds"] = round(time.process_time() - c, 1)
    res["device"] = device
    log(format_table(res, heads))
    return res


class TaskError(RuntimeError):
    """A pool task's failure, as ``"<type>: <message>"`` of the original exception: always picklable
    (an exception that is not, e.g. ``ArffError``, would break the whole pool, every data set)."""


_LOADED: dict = {}  # pool worker: the last data set it loaded, {key: (ds, _prepare(ds, recipe))}


def _run_head_task(path: str, head: str, seeds: int, recipe: Recipe, select_seeds: int,
                   budget_s: float | None, file_mean_quirk: bool, device: str, threads: int,
                   prefix: str = "") -> dict:
    """One (data set, head) unit of work in a pool worker: load and standardise the data set (kept
    for the worker's next head of the same data set), then :func:`run_head` with a budget of
    ``budget_s`` CPU seconds of this process, counted from after the load. Returns ``{"dataset",
    "head", "result", "start", "end", "cpu_seconds"}`` (start/end: ``time.time()``, the load
    included; cpu_seconds: this task's, the load included)."""
    import traceback

    import torch

    torch.set_num_threads(threads)
    log = _prefixed(prefix)
    start, c = time.time(), time.process_time()
    try:
        key = (path, file_mean_quirk, recipe)
        if key not in _LOADED:
            _LOADED.clear()
            ds = _load(path, file_mean_quirk, log, device)
            _LOADED[key] = (ds, _prepare(ds, recipe))
        ds, prepared = _LOADED[key]
        deadline = None if budget_s is None else time.process_time() + budget_s
        res = run_head(ds, head, seeds, recipe, select_seeds, deadline, log=log, device=device, prepared=prepared)
    except Exception as e:  # noqa: BLE001 - sent back as a plain, picklable error
        log(traceback.format_exc().rstrip())
        raise TaskError(f"{type(e).__name__}: {e}") from None
    return {"dataset": ds.name, "head": head, "result": res, "start": start, "end": time.time(),
            "cpu_seconds": time.process_time() - c}


def _merge_tasks(tasks: list[dict], heads: list[str], recipe: Recipe, device: str) -> dict:
    """One data set's dict from its :func:`_run_head_task` results: ``seconds`` = wall time from
    the first head's start to the last head's end, ``cpu_seconds`` = the heads' CPU seconds summed."""
    per_head = {t["head"]: t["result"] for t in tasks}
    wall = max(t["end"] for t in tasks) - min(t["start"] for t in tasks)
    res = merge_heads(tasks[0]["dataset"], heads, per_head, recipe, wall, sum(t["cpu_seconds"] for t in tasks))
    res["device"] = device
    return res


def _head_rank(head: str) -> int:
    """Scheduling order of the heads of one data set (costliest first): ``+mc``, then the dense
    heads (v2, v3), then the rest."""
    name, _, flag = head.partition("+")
    return 0 if flag else (1 if name in ("dhmcn_v2", "dhmcn_v3") else 2)


def _summary(res: dict, heads: list[str]) -> dict:
    out = {"dataset": res["dataset"]}
    for head in heads:
        out[head] = {k: res[head][k] for k in ("auprc_mean", "auprc_std")}
    return out


def format_markdown(results: list[dict], heads: list[str], *, command: str, device: str, seeds: int,
                    wall_s: float | None = None, pending: list[str] | None = None,
                    failed: dict[str, str] | None = None, skipped: list[str] | None = None,
                    note: str | None = None) -> str:
    """The Markdown report: how it was made, one summary table (AU(PRC) mean ± std per head beside
    the published figures), wins per head, and per-data-set details."""
    import datetime

    results = sorted(results, key=lambda r: r["dataset"])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# DHMCN heads on the public HMC data sets (bench/hmc.py)", "",
             f"- Command: `{command}`",
             f"- Device: {device}"] + ([f"- {note}"] if note else []) + [
             f"- Written: {now}; {len(results)} data set(s) done"
             + (f", total {wall_s:.0f} s wall" if wall_s is not None else ""),
             f"- Protocol: C-HMCNN's (epoch selection on validation, retrain on train+valid, test AU(PRC) micro "
             f"over non-root classes), one recipe for all data sets (`bench/hmc.py` `Recipe`), {seeds} seed(s).",
             "- Published figures: C-HMCNN(h) and HMCN-F test AU(PRC) from `../shared/data/hmc/README.md`; "
             "✓ = the head's mean is at least HMCN-F's, ✓✓ = at least both.", ""]
    if skipped:
        lines += [f"- Skipped (no train or no test file): {', '.join(skipped)}", ""]
    if pending:
        lines += [f"- **Not finished** (run stopped or still running): {', '.join(pending)}", ""]
    if failed:
        lines += ["- **Failed**: " + "; ".join(f"{k}: {v}" for k, v in failed.items()), ""]
    hdr = "| dataset | " + " | ".join(heads) + " | HMCN-F | C-HMCNN | wall s |"
    lines += [hdr, "|" + "---|" * (len(heads) + 4)]
    wins = {h: [0, 0, 0] for h in heads}  # >= HMCN-F, >= C-HMCNN, data sets with figures
    for r in results:
        pub = r.get("published") or {}
        cells = []
        for h in heads:
            x = r.get(h)
            if not x:
                cells.append("–")
                continue
            mark = ""
            if pub:
                wins[h][2] += 1
                ge_f, ge_c = x["auprc_mean"] >= pub["HMCN-F"], x["auprc_mean"] >= pub["C-HMCNN"]
                wins[h][0] += ge_f
                wins[h][1] += ge_c
                mark = " ✓✓" if ge_c and ge_f else (" ✓" if ge_f else "")
            n = "" if x.get("n_seeds", seeds) == seeds else f" ({x.get('n_seeds')} seeds)"
            cells.append(f"{x['auprc_mean']:.3f} ± {x['auprc_std']:.3f}{mark}{n}")
        pf = f"{pub['HMCN-F']:.3f}" if pub else "–"
        pc = f"{pub['C-HMCNN']:.3f}" if pub else "–"
        lines.append(f"| {r['dataset']} | " + " | ".join(cells) + f" | {pf} | {pc} | {r.get('seconds', 0):.0f} |")
    lines += [""]
    lines += ["| head | ≥ HMCN-F | ≥ C-HMCNN | of (data sets with published figures) |", "|---|---|---|---|"]
    for h in heads:
        lines.append(f"| {h} | {wins[h][0]} | {wins[h][1]} | {wins[h][2]} |")
    lines += ["", "## Details", "",
              "| dataset | head | width | hidden | epochs | valid AU(PRC) | seeds | test AU(PRC) per seed | s (wall) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for h in heads:
            x = r.get(h)
            if x:
                lines.append(f"| {r['dataset']} | {h} | x{x['width']} | {x['hidden']} | {x['epochs']} | "
                             f"{x['valid_auprc']:.4f} | {x['n_seeds']} | {', '.join(f'{v:.4f}' for v in x['auprc'])} | "
                             f"{x['seconds']:.0f} |")
    if results:
        lines += ["", "Recipe: `" + json.dumps(results[0].get("recipe", {})) + "`"]
    return "\n".join(lines) + "\n"


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
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here")
    skipped: list[str] = []
    dirs = dataset_dirs(args.data, skipped)
    if skipped:
        print(f"skipped (no train or no test .arff): {', '.join(skipped)}", flush=True)
    command = "python bench/hmc.py " + " ".join(sys.argv[1:] if argv is None else argv)
    device = device_description(args.device)
    print(f"{len(dirs)} data set(s) on {device}, {max(1, args.workers)} worker(s)", flush=True)
    t_all = time.monotonic()
    results: list[dict] = []
    failed: dict[str, str] = {}
    names = [d.name for d in dirs]

    finished: set[str] = set()

    def done(res: dict, dname: str) -> None:
        results.append(res)
        finished.add(dname)
        if args.json_out:
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_out).write_text(json.dumps(results, indent=1))
        if args.md_out:
            Path(args.md_out).parent.mkdir(parents=True, exist_ok=True)
            pending = [n for n in names if n not in finished and n not in failed]
            Path(args.md_out).write_text(format_markdown(
                results, heads, command=command, device=device, seeds=args.seeds,
                wall_s=time.monotonic() - t_all, pending=pending, failed=failed, skipped=skipped, note=args.note))
        print(json.dumps(_summary(res, heads)), flush=True)

    common = dict(heads=heads, seeds=args.seeds, recipe=recipe, select_seeds=args.select_seeds,
                  max_minutes=args.max_minutes or None, file_mean_quirk=not args.no_file_mean_quirk,
                  device=args.device, threads=args.threads)
    if args.workers <= 1 or len(dirs) * len(heads) == 1:
        for d in dirs:
            done(_run_one(str(d), **common), d.name)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # the unit of work is one (data set, head): largest data set first, its costliest heads first
        tasks = [(d, h) for d in sorted(dirs, key=_dataset_cost, reverse=True)
                 for h in sorted(heads, key=_head_rank)]
        budget = head_budget_s(common.pop("max_minutes"), len(heads), args.workers)
        del common["heads"]
        got: dict[str, list[dict]] = {d.name: [] for d in dirs}
        n_workers = min(args.workers, len(tasks))
        if budget is not None:
            print(f"budget: {budget:.0f} CPU s per head ({len(heads)} heads, {n_workers} worker(s))", flush=True)
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(_run_head_task, str(d), h, **common, budget_s=budget, prefix=f"[{d.name} {h}] "): (d, h)
                    for d, h in tasks}
            for f in as_completed(futs):
                d, h = futs[f]
                if d.name in failed:  # a head of this data set failed already (or this one was cancelled)
                    continue
                try:
                    r = f.result()
                except Exception as e:  # noqa: BLE001 - one data set's failure must not lose the others
                    why = str(e) if isinstance(e, TaskError) else f"{type(e).__name__}: {e}"
                    failed[d.name] = f"{h}: {why}"
                    print(f"[{d.name}] FAILED ({h}): {why}", flush=True)
                    for g, (d2, _) in futs.items():  # its heads not yet started are not run
                        if d2 == d:
                            g.cancel()
                    continue
                got[d.name].append(r)
                if len(got[d.name]) == len(heads):  # the data set's last head: report it
                    res = _merge_tasks(got.pop(d.name), heads, recipe, args.device)
                    _prefixed(f"[{d.name}] ")(format_table(res, heads))
                    done(res, d.name)
        if failed and args.md_out and not results:
            Path(args.md_out).write_text(format_markdown([], heads, command=command, device=device,
                                                         seeds=args.seeds, failed=failed, skipped=skipped,
                                                         note=args.note))
    print(f"total {time.monotonic() - t_all:.0f}s wall for {len(results)} data set(s)"
          + (f", {len(failed)} failed" if failed else ""), flush=True)
    if results:  # the last line stays one data set's JSON object
        print(json.dumps(_summary(results[-1], heads)), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
