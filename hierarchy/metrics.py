"""Hierarchical classification metrics over ``[B, N]`` label matrices in taxonomy node order.

Definitions (B rows, N nodes, the implicit root never counted):

- **level accuracy** at level h: over the rows whose *true* primary path reaches level h, the share
  whose predicted path has the same node at level h; a predicted path that stops above h is wrong.
- **leaf accuracy**: predicted primary node == true primary node.
- **hierarchical precision / recall / F1** (Kiritchenko et al. 2005), on ancestor-closed label
  sets T (true) and P (predicted) per row. ``micro`` = ``sum|T∩P| / sum|P|`` and
  ``sum|T∩P| / sum|T|``, F1 their harmonic mean — as HiClass's ``precision``/``recall``/``f1`` with
  ``average="micro"``. ``macro`` = the mean over rows of each row's precision, recall and F1 — as
  HiClass ``average="macro"``, except that an empty P (or T, or T∩P) counts as 0 where HiClass
  divides by zero.
- **micro AU(PRC)**: as C-HMCNN computes it, i.e. scikit-learn's
  ``average_precision_score(Y, S, average="micro")`` over all (non-root) node columns with
  ancestor-closed ``Y``: all (label, score) pairs flattened, sorted by score, and step-wise average
  precision ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds (tied scores form one
  step). No positive label at all gives 0.0, as scikit-learn does.
- **violation rate**: share of rows whose label set breaks a rule: a node without its parent
  (ancestry), two members of one ``exclusive`` group, or a ``requires`` rule whose target is absent.

:func:`evaluate` returns all of them in one dict; :func:`evaluate_by_subtree` repeats it per level-1
node of the true path (the breakdown ``vtag evaluate`` prints).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from vtag.hierarchy.taxonomy import Taxonomy


class PRF(NamedTuple):
    precision: float
    recall: float
    f1: float


# ---------------------------------------------------------------------- input checks
def _labels(x: np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or (n is not None and arr.shape[1] != n):
        want = f"[batch, {n}]" if n is not None else "[batch, nodes]"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got dtype {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def _indices(x: np.ndarray, name: str, n: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-d integer array of node indices, got {arr.dtype} {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{name} holds node indices outside 0..{n - 1}")
    return arr.astype(np.int64)


def _same_rows(*arrays: np.ndarray) -> int:
    rows = {len(a) for a in arrays}
    if len(rows) != 1:
        raise ValueError(f"inputs disagree on the number of rows: {sorted(rows)}")
    return rows.pop()


# ---------------------------------------------------------------------- accuracy
def leaf_accuracy(true_leaf: np.ndarray, pred_leaf: np.ndarray) -> float:
    """Share of rows whose predicted primary node ``[B]`` equals the true one ``[B]``; NaN if B = 0."""
    t, p = np.asarray(true_leaf), np.asarray(pred_leaf)
    _same_rows(t, p)
    return float(np.mean(t == p)) if t.size else float("nan")


def level_accuracy(taxonomy: Taxonomy, true_leaf: np.ndarray, pred_leaf: np.ndarray) -> dict[int, float]:
    """``{level: accuracy}`` for levels 1..max_depth (see the module docstring); ``true_leaf`` and
    ``pred_leaf`` are ``[B]`` node indices. NaN for a level that no true path reaches."""
    n = taxonomy.n_nodes
    t = _indices(true_leaf, "true_leaf", n)
    p = _indices(pred_leaf, "pred_leaf", n)
    _same_rows(t, p)
    pm = taxonomy.path_matrix  # [N, depth], -1 past the node
    tp, pp = pm[t], pm[p]
    out = {}
    for h in range(1, taxonomy.max_depth + 1):
        reach = tp[:, h - 1] >= 0
        out[h] = float(np.mean(pp[reach, h - 1] == tp[reach, h - 1])) if reach.any() else float("nan")
    return out


# ---------------------------------------------------------------------- hierarchical P/R/F
def hierarchical_prf(
    true: np.ndarray,
    pred: np.ndarray,
    average: Literal["micro", "macro"] = "micro",
    *,
    taxonomy: Taxonomy | None = None,
) -> PRF:
    """Kiritchenko's hP, hR, hF1 of ``pred [B, N]`` against ``true [B, N]`` (bool).

    The sets must be ancestor-closed; pass ``taxonomy`` to close them here. ``average``: ``micro``
    (pooled counts) or ``macro`` (mean of per-row values); see the module docstring.
    """
    n = taxonomy.n_nodes if taxonomy is not None else None
    t = _labels(true, "true", n)
    p = _labels(pred, "pred", t.shape[1])
    _same_rows(t, p)
    if taxonomy is not None:
        t, p = taxonomy.close_ancestors(t), taxonomy.close_ancestors(p)
    inter = (t & p).sum(axis=1).astype(np.float64)
    n_true = t.sum(axis=1).astype(np.float64)
    n_pred = p.sum(axis=1).astype(np.float64)
    if average == "micro":
        prec = _ratio(inter.sum(), n_pred.sum())
        rec = _ratio(inter.sum(), n_true.sum())
        return PRF(prec, rec, _ratio(2 * prec * rec, prec + rec))
    if average == "macro":
        if not len(t):
            return PRF(float("nan"), float("nan"), float("nan"))
        prec = np.divide(inter, n_pred, out=np.zeros_like(inter), where=n_pred > 0)
        rec = np.divide(inter, n_true, out=np.zeros_like(inter), where=n_true > 0)
        f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(inter), where=(prec + rec) > 0)
        return PRF(float(prec.mean()), float(rec.mean()), float(f1.mean()))
    raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


# ---------------------------------------------------------------------- AU(PRC)
def auprc_micro(true: np.ndarray, scores: np.ndarray, *, taxonomy: Taxonomy | None = None) -> float:
    """C-HMCNN's micro AU(PRC): average precision of all flattened (label, score) pairs.

    ``true [B, N]`` bool (ancestor-closed; pass ``taxonomy`` to close it here), ``scores [B, N]``
    float (C-HMCNN scores the hierarchy-constrained outputs: pass consistent scores). Equals
    ``sklearn.metrics.average_precision_score(true, scores, average="micro")``.
    """
    n = taxonomy.n_nodes if taxonomy is not None else None
    t = _labels(true, "true", n)
    s = np.asarray(scores)
    if s.shape != t.shape:
        raise ValueError(f"scores must have the shape of the labels {t.shape}, got {s.shape}")
    if not np.issubdtype(s.dtype, np.number) or not np.isfinite(s).all():
        raise ValueError("scores must be finite numbers")
    if taxonomy is not None:
        t = taxonomy.close_ancestors(t)
    y, s = t.ravel(), s.ravel()
    order = np.argsort(s, kind="stable")[::-1]
    y, s = y[order], s[order]
    # the last position of each run of equal scores closes one threshold step
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1] if s.size else np.zeros(0, np.int64)
    tps = np.cumsum(y, dtype=np.int64)[ends]
    if not tps.size or tps[-1] == 0:
        return 0.0
    precision = tps / (ends + 1.0)
    recall_step = np.diff(tps, prepend=0) / float(tps[-1])
    return float(np.sum(recall_step * precision))


# ---------------------------------------------------------------------- constraints
def violations(taxonomy: Taxonomy, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row rule breaks of ``labels [B, N]``: ``{"ancestry", "exclusive", "requires", "any"}``,
    each ``[B]`` bool."""
    lab = _labels(labels, "labels", taxonomy.n_nodes)
    child = np.flatnonzero(taxonomy.parent_index >= 0)
    ancestry = (lab[:, child] & ~np.take(lab, taxonomy.parent_index[child], axis=1)).any(axis=1)
    c = taxonomy.constraints
    exclusive = np.zeros(len(lab), dtype=bool)
    if c.exclusive:
        groups = np.zeros((taxonomy.n_nodes, len(c.exclusive)), dtype=np.float32)
        for g, members in enumerate(c.exclusive):
            groups[[taxonomy.index[m] for m in members], g] = 1.0
        exclusive = ((lab.astype(np.float32) @ groups) > 1.5).any(axis=1)
    pairs = [(taxonomy.index[a], taxonomy.index[b]) for a, bs in c.requires.items() for b in bs]
    requires = np.zeros(len(lab), dtype=bool)
    if pairs:
        src, dst = np.array(pairs).T
        requires = (lab[:, src] & ~lab[:, dst]).any(axis=1)
    return {"ancestry": ancestry, "exclusive": exclusive, "requires": requires,
            "any": ancestry | exclusive | requires}


def violation_rate(taxonomy: Taxonomy, labels: np.ndarray) -> float:
    """Share of rows of ``labels [B, N]`` that break ancestry, ``exclusive`` or ``requires``."""
    bad = violations(taxonomy, labels)["any"]
    return float(bad.mean()) if bad.size else float("nan")


# ---------------------------------------------------------------------- everything
def evaluate(
    taxonomy: Taxonomy,
    true_labels: np.ndarray,
    true_leaf: np.ndarray,
    pred_labels: np.ndarray,
    pred_leaf: np.ndarray,
    scores: np.ndarray,
) -> dict[str, float | int]:
    """All metrics in one dict.

    ``true_labels``/``pred_labels [B, N]`` bool (closed under ancestors here for hP/hR/hF1 and
    AU(PRC); violations are counted on ``pred_labels`` as given), ``true_leaf``/``pred_leaf [B]``
    node indices of the primary nodes, ``scores [B, N]`` the (consistent) scores for AU(PRC).
    Keys: ``n``, ``leaf_acc``, ``level{h}_acc`` for h = 1..max_depth, ``hp``, ``hr``, ``hf1``
    (micro), ``hp_macro``, ``hr_macro``, ``hf1_macro``, ``auprc``, ``violations``.
    """
    n = taxonomy.n_nodes
    t_lab = _labels(true_labels, "true_labels", n)
    p_lab = _labels(pred_labels, "pred_labels", n)
    t_leaf = _indices(true_leaf, "true_leaf", n)
    p_leaf = _indices(pred_leaf, "pred_leaf", n)
    rows = _same_rows(t_lab, p_lab, t_leaf, p_leaf, np.asarray(scores))
    if rows == 0:
        raise ValueError("evaluate needs at least one row")
    t_closed, p_closed = taxonomy.close_ancestors(t_lab), taxonomy.close_ancestors(p_lab)
    micro = hierarchical_prf(t_closed, p_closed, "micro")
    macro = hierarchical_prf(t_closed, p_closed, "macro")
    out: dict[str, float | int] = {"n": rows, "leaf_acc": leaf_accuracy(t_leaf, p_leaf)}
    for h, acc in level_accuracy(taxonomy, t_leaf, p_leaf).items():
        out[f"level{h}_acc"] = acc
    out.update(
        hp=micro.precision, hr=micro.recall, hf1=micro.f1,
        hp_macro=macro.precision, hr_macro=macro.recall, hf1_macro=macro.f1,
        auprc=auprc_micro(t_closed, scores),
        violations=violation_rate(taxonomy, p_lab),
    )
    return out


def evaluate_by_subtree(
    taxonomy: Taxonomy,
    true_labels: np.ndarray,
    true_leaf: np.ndarray,
    pred_labels: np.ndarray,
    pred_leaf: np.ndarray,
    scores: np.ndarray,
) -> dict[str, dict[str, float | int]]:
    """``{level1_id: evaluate(...)}`` over the rows whose true primary path starts at that level-1
    node (all node columns kept); level-1 nodes without rows are left out. Same arguments as
    :func:`evaluate`."""
    t_leaf = _indices(true_leaf, "true_leaf", taxonomy.n_nodes)
    top = taxonomy.path_matrix[t_leaf, 0]
    arrays = [np.asarray(a) for a in (true_labels, pred_labels, pred_leaf, scores)]
    _same_rows(t_leaf, *arrays)
    out = {}
    for node in np.unique(top):
        rows = top == node
        t_lab, p_lab, p_leaf, s = (a[rows] for a in arrays)
        out[taxonomy.ids[node]] = evaluate(taxonomy, t_lab, t_leaf[rows], p_lab, p_leaf, s)
    return dict(sorted(out.items()))
