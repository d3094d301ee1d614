"""The flat head's temperature (``head.temperature: auto``) and the log-loss that chooses it and the
SVM's mix weight (``head.tfidf_wide_mix_rule: nll``; the shipped ``largest_within_se`` reads accuracy).

A flat head scores ``softmax(leaf_logits / T)``. Mixed with a linear SVM at weight 12–64 its
logits are far apart and nearly every primary score is ~1, so a score threshold (``decode.thresholds``)
filters nothing and the profile refresh's expected counts (``profiles.count: score``) count every tag
as a whole video. ``T`` is chosen after training by the mean negative
log-likelihood of the validation rows' labels (a proper scoring rule), so that a score of 0.7 means
about 70 % right. The leaves keep their order; the primary path (the best product of node scores
along a path, :mod:`vtag.hierarchy.decode`) can change where a parent's mass decides between close
leaves.

The same log-loss, each candidate at its own best temperature, can choose the SVM's weight in the
mix (``nll``): accuracy on ~1,400 validation rows moves by single rows between weights and its
argmax follows the noise, while the log-loss reads every row's whole score vector. On noisy labels,
though, the log-loss prefers soft scores to right ones and chose small weights where accuracy wanted
large ones; the shipped rule, ``largest_within_se`` (:func:`largest_within_se`), reads accuracy
but not its argmax.

A label at an internal node counts as the mass of the leaves below it (``-log sum p(leaf)``).
"""

from __future__ import annotations

import numpy as np

#: the bounds of the inverse temperature ``beta = 1 / T`` searched
BETA_RANGE = (1e-3, 1e2)


def label_leaf_mask(taxonomy, frame) -> np.ndarray:
    """``[B, L]`` bool: the leaves (``taxonomy.leaf_indices`` order) at or below each row's primary
    label; all False for a row without a known label (it is left out of the log-loss).

    Parameters
    ----------
    taxonomy : Taxonomy
    frame : DataFrame
        Rows with a ``labels`` column (the first label is the primary one).
    """
    from vtag.models.evaluate import true_labels

    _, primary = true_labels(taxonomy, frame)
    leaves = np.asarray(taxonomy.leaf_indices)
    eye = np.zeros((len(leaves), taxonomy.n_nodes), dtype=bool)
    eye[np.arange(len(leaves)), leaves] = True
    below = taxonomy.close_ancestors(eye)  # [L, N]: leaf l is at or below node n
    mask = np.zeros((len(frame), len(leaves)), dtype=bool)
    known = primary >= 0
    mask[known] = below[:, primary[known]].T
    return mask


def mean_nll(leaf_logits: np.ndarray, mask: np.ndarray, beta: float = 1.0) -> float:
    """Mean ``-log sum_{l in mask} softmax(beta * leaf_logits)_l`` over the rows with a label.

    Parameters
    ----------
    leaf_logits : ndarray
        ``[B, L]`` the flat head's logits before any temperature.
    mask : ndarray
        ``[B, L]`` bool, :func:`label_leaf_mask`.
    beta : float
        Inverse temperature.
    """
    from scipy.special import logsumexp

    rows = mask.any(axis=1)
    if not rows.any():
        raise ValueError("mean_nll needs at least one row with a known label")
    z = float(beta) * np.asarray(leaf_logits, dtype=np.float64)[rows]
    m = mask[rows]
    return float(np.mean(logsumexp(z, axis=1) - logsumexp(np.where(m, z, -np.inf), axis=1)))


def fit_temperature(leaf_logits: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """The temperature with the lowest :func:`mean_nll`: a coarse log-spaced scan of ``beta`` over
    :data:`BETA_RANGE`, refined by a bounded scalar search between the best scan point's neighbours.

    Parameters
    ----------
    leaf_logits : ndarray
        ``[B, L]`` logits at temperature 1.
    mask : ndarray
        ``[B, L]`` bool, :func:`label_leaf_mask`.

    Returns
    -------
    (temperature, mean NLL at it)
    """
    from scipy.optimize import minimize_scalar

    lo, hi = np.log(BETA_RANGE[0]), np.log(BETA_RANGE[1])
    grid = np.linspace(lo, hi, 41)
    losses = [mean_nll(leaf_logits, mask, np.exp(g)) for g in grid]
    k = int(np.argmin(losses))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    best_g, best = grid[k], losses[k]
    if b > a:
        res = minimize_scalar(lambda g: mean_nll(leaf_logits, mask, np.exp(g)), bounds=(a, b), method="bounded",
                              options={"xatol": 1e-3})
        if res.fun < best:
            best_g, best = float(res.x), float(res.fun)
    return float(np.exp(-best_g)), float(best)


def top_leaf_correct(leaf_logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[R]`` bool over the rows with a label: the highest-scoring leaf is at or below the label
    (the top leaf's accuracy; any temperature gives the same).

    Parameters
    ----------
    leaf_logits, mask : ndarray
        ``[B, L]``, as :func:`mean_nll` takes them.
    """
    rows = mask.any(axis=1)
    top = np.argmax(np.asarray(leaf_logits)[rows], axis=1)
    return mask[rows][np.arange(int(rows.sum())), top]


def largest_within_se(results: dict) -> float:
    """``head.tfidf_wide_mix_rule: largest_within_se``: the largest candidate weight whose accuracy is
    within one paired standard error of the best accuracy.

    The standard error of the accuracy difference of two candidates on the same rows is
    ``sqrt(rows where exactly one is right) / rows`` (McNemar's). Measured on five splits of four
    title sets (docs/model.md, "Choosing the mix weight"), the held-out accuracy rose with the SVM's
    weight or stayed flat up to the top of the grid, while the log-loss chose small weights on noisy
    labels (TNEWS: 2, 3 points below 64). The guard keeps a smaller weight where validation shows
    it clearly more accurate: a deep model that reads what the SVM cannot (covers, the uploader's
    history) keeps its share.

    Parameters
    ----------
    results : dict
        ``{weight: correct [R] bool}``, on the same rows for all (:func:`top_leaf_correct`).
    """
    if not results:
        raise ValueError("largest_within_se needs at least one candidate")
    acc = {k: float(np.mean(c)) if len(c) else 0.0 for k, c in results.items()}
    best = max(results, key=lambda k: (acc[k], k))
    ref = np.asarray(results[best], dtype=bool)

    def tied(k) -> bool:
        c = np.asarray(results[k], dtype=bool)
        return acc[best] - acc[k] <= np.sqrt(np.count_nonzero(c != ref)) / max(1, ref.size)

    return max(k for k in results if tied(k))


def set_temperature(model, value: float) -> None:
    """Set the flat head's ``temperature`` buffer (``head.temperature`` not 1)."""
    if not has_temperature(model):
        raise ValueError("the model's head has no temperature (head.temperature: auto, flat head)")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be > 0, got {value}")
    model.head.temperature.fill_(float(value))


def auto_temperature(config) -> bool:
    """Whether the model config asks for a temperature chosen after training (``head.temperature:
    auto``; the factory then gives the flat head its buffer, and refuses other heads)."""
    return str(config["head"].get("temperature")) == "auto"


def has_temperature(model) -> bool:
    return getattr(getattr(model, "head", None), "temperature", None) is not None
