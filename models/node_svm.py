"""One binary linear SVM per taxonomy node: the TF-IDF SVM of the DHMCN heads.

The flat head's SVM (:func:`vtag.models.sparse_wide.fit_linear_svm`) is one multi-class
(one-vs-rest) ``LinearSVC`` over the primary label nodes. A DHMCN head scores every node with its
own sigmoid, a row may carry several labels (co-occurring tags in other branches), and a label
that stops at an internal node leaves its descendants unknown. The SVM mixed into its node logits
(``head.tfidf_wide: svm|mix`` with a ``dhmcn_*`` head) is therefore one binary ``LinearSVC`` per
node, on the targets the DHMCN loss trains on (:meth:`vtag.models.featurize.Featurizer.targets`):
1 where the node or a descendant is labeled (extra tags included), 0 where it is a known negative;
rows where it is unknown (below a partial label) are left out of that node's fit, as the loss
skips them. Its margins are one-vs-rest margins like the flat SVM's, about +-1.
"""

from __future__ import annotations

import os

import numpy as np

#: the intercept of a node whose known rows are all negative (all positive: its negation); a
#: node never known, or never positive where known but unknown on other rows (the rows of its
#: branch all stop above it), gets 0: the mix adds nothing to it
CONSTANT_MARGIN = 1.0


def fit_node_svc(x, targets: np.ndarray, grid: tuple[float, ...], x_val=None, primary_val: np.ndarray | None = None,
                 leaf_outputs: np.ndarray | None = None, seed: int = 0):
    """Fit one binary ``LinearSVC`` per node for each C of ``grid``; keep the C whose margins put the
    highest-scoring leaf on the most validation rows' primary leaf (the first C without such rows).

    Parameters
    ----------
    x : scipy sparse ``[n, cols]``
        Features of the training rows (:meth:`vtag.models.sparse_wide.TfidfWide.features`).
    targets : ndarray
        ``[n, N]`` float: 1 positive, 0 negative, -1 unknown (left out of that node's fit).
    grid : tuple of float
        ``C`` candidates.
    x_val : scipy sparse ``[m, cols]``, optional
        Validation features.
    primary_val : ndarray, optional
        ``[m]`` int node index of each validation row's primary label (-1: none); rows whose label
        is not among ``leaf_outputs`` do not choose C.
    leaf_outputs : ndarray, optional
        ``[L]`` int node indices of the leaves.
    seed : int
        ``LinearSVC``'s random state.

    Returns
    -------
    ``(C, validation accuracy or None, (coef [N, cols], intercept [N]))``
    """
    scoring = None
    if x_val is not None and primary_val is not None and leaf_outputs is not None and len(grid) > 1:
        leaf_outputs = np.asarray(leaf_outputs, dtype=np.int64)
        rows = np.isin(primary_val, leaf_outputs)
        if rows.any():
            scoring = (x_val[rows], np.asarray(primary_val)[rows])
    best = None
    for c in (grid if scoring is not None else grid[:1]):
        coef, intercept = _fit_nodes(x, targets, float(c), seed)
        acc = None
        if scoring is not None:
            margins = scoring[0] @ coef[leaf_outputs].T + intercept[leaf_outputs]
            acc = float(np.mean(leaf_outputs[np.asarray(margins).argmax(axis=1)] == scoring[1]))
        if best is None or (acc is not None and acc > best[1]):
            best = (float(c), acc, (coef, intercept))
    return best


def _fit_nodes(x, targets: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(coef [N, cols], intercept [N])`` of one binary SVM per column of ``targets`` at ``C=c``.
    The fits run on a thread per core: liblinear releases the GIL, and each fit is independent
    (the same result in any order)."""
    from concurrent.futures import ThreadPoolExecutor

    from sklearn.svm import LinearSVC

    targets = np.asarray(targets)
    n_nodes = targets.shape[1]
    coef = np.zeros((n_nodes, x.shape[1]), dtype=np.float32)
    intercept = np.zeros(n_nodes, dtype=np.float32)
    todo = []
    for j in range(n_nodes):
        known = targets[:, j] >= 0
        y = targets[known, j] > 0
        if not known.any():
            continue  # never known: no evidence either way
        if y.all() or not y.any():
            # never positive where known, but unknown on some rows: every row that could have been
            # positive stops above it (a partial label), so its negatives say nothing of it
            partial = not y.any() and not known.all()
            intercept[j] = 0.0 if partial else CONSTANT_MARGIN if y.all() else -CONSTANT_MARGIN
            continue
        todo.append((j, known, y))

    def fit(job):
        j, known, y = job
        clf = LinearSVC(C=c, random_state=seed).fit(x if known.all() else x[known], y.astype(np.int64))
        coef[j], intercept[j] = clf.coef_[0], clf.intercept_[0]

    with ThreadPoolExecutor(max_workers=max(1, min(len(todo), os.cpu_count() or 1))) as pool:
        list(pool.map(fit, todo))
    return coef, intercept
