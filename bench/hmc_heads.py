"""The training side of ``bench/hmc.py``: one :class:`Recipe` for every data set, the AU(PRC)
metric, epoch selection on validation and the final seeds of one head (:func:`run_head`), and one
data set's heads (:func:`run_dataset`). Protocol: see ``bench/hmc.py``'s docstring."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np
from hmc_arff import HMCDataset  # bench/hmc_arff.py

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


def prepare_dataset(ds: HMCDataset, recipe: Recipe) -> tuple:
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
    one always runs). ``prepared``: :func:`prepare_dataset`'s tuple, if the caller already has it.

    Returns ``{"auprc_mean", "auprc_std", "auprc", "epochs", "width", "hidden", "valid_auprc",
    "valid_by_width", "n_seeds", "seconds", "cpu_seconds", "select_cpu_seconds"}``.
    """
    clock = time.process_time
    th, ch = time.monotonic(), clock()
    spec, mask, X_all, Y_all, n_sel = prepared if prepared is not None else prepare_dataset(ds, recipe)
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
    prepared = prepare_dataset(ds, recipe)
    per_head: dict[str, dict] = {}
    for k, head in enumerate(heads):
        ch = clock()
        # each head gets an equal share of what is left of the budget
        head_deadline = None if deadline is None else ch + (deadline - ch) / (len(heads) - k)
        per_head[head] = run_head(ds, head, seeds, recipe, select_seeds, head_deadline, log=log, device=device,
                                  prepared=prepared)
    return merge_heads(ds.name, heads, per_head, recipe, time.monotonic() - t0, clock() - c0)
