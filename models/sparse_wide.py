"""A sparse linear model on TF-IDF n-grams, added to the head's logits ("wide" in wide & deep).

A tuned linear SVM on TF-IDF word n-grams is the strongest simple classifier of short titles; a
mean of low-dimensional n-gram embeddings (fastText, the bag branch) has far fewer parameters per
n-gram and comes out weaker on real titles. :class:`TfidfWide` gives the model that linear part:
one weight per (kept n-gram, output) pair, on the same ``bow_ids`` the bag branch reads.

Per row, with ``c`` the count of an n-gram in the row and ``df`` the number of training rows that
hold it (``N`` rows in all): ``w = (1 + log c) * idf``, ``idf = log((1 + N) / (1 + df)) + 1``
(scikit-learn's smooth idf with sublinear tf), L2-normalised over the row; the logits are
``sum_g w_g * W[g]``. The table holds the ``max_params // n_out`` n-grams in the most training
rows (all when they fit); the others still count in the row's norm. ``idf`` and the table-row map
are persistent buffers, so they travel in the bundle's weights.

``fitted=True`` (``head.tfidf_wide: svm``): the table and a per-output bias are not learned by
back-propagation but fitted once, before the deep part trains, as a linear SVM (scikit-learn's
``LinearSVC``, C chosen on the run's validation split: :func:`fit_linear_svm`), then frozen; only a
scale on its margins is learned, and the rest of the model learns the residual on top of it. The
model then starts from what a tuned linear SVM on TF-IDF knows, instead of having to learn it
jointly with everything else (where it overfits within a few epochs).

``mix=True`` (``head.tfidf_wide: mix``): the same fitted SVM, but the deep model trains without it
(``scale`` is 0 and not learned) and the SVM's margins are mixed into its logits afterwards with
the weight that scores best on the validation rows (:func:`choose_mix_scale`): an ensemble of two
models that err differently, the weight chosen where neither was trained. Training on top of the
SVM's margins (``svm``) teaches the deep part little, because those margins are near-perfect on
the very rows it trains on.

``new_uploader_svm=True`` (``head.tfidf_wide_new_uploader_svm``, with exact uploader columns): a
second SVM on the TF-IDF columns alone scores the rows whose uploader has no column (a new one, or
none). In the uploader-aware SVM the uploader columns explain much of the training labels, so its
n-gram weights are weaker than a text-only SVM's: on Bilibili titles of new uploaders the text-only
SVM is ~3 points more accurate, while the uploader-aware one is far ahead on returning uploaders.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn


def wide_rows(n_keys: int, n_out: int, max_params: int) -> int:
    """Table rows (pad row 0 included) for ``n_keys`` kept n-grams and ``n_out`` outputs."""
    return min(int(n_keys), max(1, int(max_params) // max(1, int(n_out)))) + 1


class TfidfWide(nn.Module):
    """``bow_ids [B, M]`` int64 (row ids 1..K of the kept n-grams, 0 = pad) -> logits ``[B, n_out]``.

    Parameters
    ----------
    n_keys : int
        K, the number of kept n-grams (``text.bow.min_count`` > 0).
    n_out : int
        Outputs (the head's logits: leaves for ``flat``, nodes for the DHMCN heads).
    max_params : int
        Cap on the table's size (``rows * n_out``).
    df : ndarray, optional
        ``[K]`` training rows per kept n-gram (a fresh model); None when weights are loaded next.
    n_docs : int
        Training rows (with ``df``).
    fitted, mix : bool
        ``head.tfidf_wide: svm`` / ``mix`` (see the module docstring).
    uploader_buckets : int
        > 0: one-hot columns of the hashed uploader ids (``uploader [B, K]``, 1..buckets).
    uploader_keys : ndarray, optional
        ``[U]`` sorted int64 exact uploader keys (``uploader_key [B]``): one column per uploader, no
        collisions; an uploader not in it (a new one) gets none. Excludes ``uploader_buckets``.
    new_uploader_svm : bool
        With ``uploader_keys``: a second, text-only table and bias (``text_table``, ``text_bias``)
        score the rows whose uploader has no column, or a column without rows in the SVM's fit
        (``uploader_fitted [U + 1]`` bool).
    """

    def __init__(self, n_keys: int, n_out: int, max_params: int, df: np.ndarray | None = None, n_docs: int = 0,
                 fitted: bool = False, mix: bool = False, uploader_buckets: int = 0,
                 uploader_keys: np.ndarray | None = None, new_uploader_svm: bool = False):
        super().__init__()
        rows = wide_rows(n_keys, n_out, max_params)
        idf = torch.zeros(n_keys + 1)
        row_of = torch.zeros(n_keys + 1, dtype=torch.long)
        if df is not None:
            df = np.asarray(df, dtype=np.float64).reshape(-1)
            if df.size != n_keys:
                raise ValueError(f"df has {df.size} entries for {n_keys} n-gram keys")
            idf[1:] = torch.as_tensor(np.log((1.0 + n_docs) / (1.0 + df)) + 1.0, dtype=torch.float32)
            top = np.lexsort((np.arange(n_keys), -df))[: rows - 1]  # most rows first, then id
            row_of[torch.as_tensor(np.sort(top) + 1)] = torch.arange(1, rows)
        self.register_buffer("idf", idf)
        self.register_buffer("row_of", row_of)
        self.table = nn.EmbeddingBag(rows, int(n_out), mode="sum", padding_idx=0)
        nn.init.zeros_(self.table.weight)
        self.fitted = bool(fitted) or bool(mix)
        self.mix = bool(mix)
        if self.fitted:
            self.table.weight.requires_grad_(False)
            self.register_buffer("bias", torch.zeros(int(n_out)))
            # margins (about +-1) -> logits; a mix starts at 0 (the deep part trains alone) and
            # is set after training, on the validation rows (choose_mix_scale)
            self.scale = nn.Parameter(torch.tensor(0.0 if self.mix else 2.0), requires_grad=not self.mix)
        self.uploader_table = None
        self.exact_uploaders = uploader_keys is not None
        if self.exact_uploaders and int(uploader_buckets) > 0:
            raise ValueError("uploader columns are either hashed (uploader_buckets) or exact (uploader_keys)")
        if self.exact_uploaders:
            self.register_buffer("uploader_keys", torch.as_tensor(np.asarray(uploader_keys, dtype=np.int64)))
        if int(uploader_buckets) > 0 or self.exact_uploaders:
            if not self.fitted:
                raise ValueError("uploader columns need a fitted TfidfWide (head.tfidf_wide: svm or mix)")
            # one-hot uploader ids beside the TF-IDF columns, as the uploader-aware SVM has them
            n_up = int(self.uploader_keys.numel()) if self.exact_uploaders else int(uploader_buckets)
            self.uploader_table = nn.EmbeddingBag(n_up + 1, int(n_out), mode="sum", padding_idx=0)
            nn.init.zeros_(self.uploader_table.weight)
            self.uploader_table.weight.requires_grad_(False)
        self.text_table = None
        if new_uploader_svm:
            if not self.exact_uploaders:
                raise ValueError("new_uploader_svm needs exact uploader columns (uploader_keys): hashed ids "
                                 "give every uploader a column, so no row counts as new")
            self.text_table = nn.EmbeddingBag(rows, int(n_out), mode="sum", padding_idx=0)
            nn.init.zeros_(self.text_table.weight)
            self.text_table.weight.requires_grad_(False)
            self.register_buffer("text_bias", torch.zeros(int(n_out)))
            # 1 per uploader column with rows in the last SVM fit: an uploader without any (one of
            # the validation rows only, before the refit) is as new to the SVM as an unseen one
            self.register_buffer("uploader_fitted", torch.zeros(self.uploader_table.num_embeddings, dtype=torch.bool))
            if self.mix:  # its own weight in the mix (choose_mix_scale); an svm learns one scale
                self.text_scale = nn.Parameter(torch.tensor(0.0), requires_grad=False)

    def weights(self, bow_ids: torch.Tensor) -> torch.Tensor:
        """``[B, M]`` float32 per-position weights; an n-gram's positions sum to its TF-IDF value."""
        valid = bow_ids > 0
        # each position's n-gram count in its row: its run's length in the row's sorted ids,
        # O(M log M) per row (a [B, M, M] comparison is too large for long character windows)
        ranked = torch.sort(bow_ids, dim=1).values
        count = (torch.searchsorted(ranked, bow_ids, right=True)
                 - torch.searchsorted(ranked, bow_ids, right=False)).clamp_min(1).float()
        w = (1.0 + torch.log(count)) * self.idf[bow_ids] * valid
        norm = torch.sqrt((w * w / count).sum(dim=1, keepdim=True)).clamp_min(1e-6)
        return w / count / norm

    def uploader_rows(self, uploader: torch.Tensor | None, uploader_key: torch.Tensor | None) -> torch.Tensor | None:
        """Rows of the uploader table ``[B, K]`` (0 = none): the hashed ids as they are, or each exact
        key's rank + 1 (0 for a key without a column); None without uploader columns or input."""
        if self.uploader_table is None:
            return None
        if not self.exact_uploaders:
            return uploader
        if uploader_key is None:
            return None
        keys = self.uploader_keys
        if keys.numel() == 0:
            return torch.zeros_like(uploader_key).unsqueeze(1)
        pos = torch.searchsorted(keys, uploader_key).clamp_max(keys.numel() - 1)
        hit = (keys[pos] == uploader_key) & (uploader_key > 0)
        return torch.where(hit, pos + 1, torch.zeros_like(pos)).unsqueeze(1)

    def forward(self, bow_ids: torch.Tensor, uploader: torch.Tensor | None = None,
                uploader_key: torch.Tensor | None = None) -> torch.Tensor | None:
        """``bow_ids [B, M]`` (and with uploader columns ``uploader [B, K]`` hashed ids or
        ``uploader_key [B]`` exact keys, 0 = null) -> logits ``[B, n_out]``; None while a mix's
        scale is 0."""
        if self.mix and float(self.scale) == 0.0 and float(getattr(self, "text_scale", 0.0)) == 0.0:
            return None  # not mixed in (yet): the deep part alone
        rows, weights = self.row_of[bow_ids], self.weights(bow_ids)
        out = self.table(rows, per_sample_weights=weights)
        up = self.uploader_rows(uploader, uploader_key)
        if up is not None:
            out = out + self.uploader_table(up)
        if self.fitted:
            out = out + self.bias
        if self.text_table is None:
            return self.scale * out if self.fitted else out
        text = self.text_table(rows, per_sample_weights=weights) + self.text_bias
        if up is None:
            known = torch.zeros(out.shape[0], 1, dtype=torch.bool, device=out.device)
        else:
            known = self.uploader_fitted[up]
        return torch.where(known, self.scale * out, getattr(self, "text_scale", self.scale) * text)

    @torch.no_grad()
    def features(self, bow_ids: torch.Tensor, uploader: torch.Tensor | None = None,
                 uploader_key: torch.Tensor | None = None):
        """``[B, rows (+ uploader rows)]`` scipy CSR: the TF-IDF matrix of ``bow_ids`` (the table's
        columns; what forward sums), then with uploader columns a 1 per uploader id (hashed
        ``uploader`` or exact ``uploader_key``)."""
        import scipy.sparse as sp

        w = self.weights(bow_ids).numpy()
        cols = self.row_of[bow_ids].numpy()
        keep = cols > 0
        rows = np.broadcast_to(np.arange(bow_ids.shape[0])[:, None], cols.shape)
        x = sp.csr_matrix((w[keep], (rows[keep], cols[keep])), shape=(bow_ids.shape[0], self.table.num_embeddings))
        if self.uploader_table is None:
            return x
        rows_up = self.uploader_rows(uploader, uploader_key)
        if rows_up is None:
            raise ValueError("this TfidfWide has uploader columns: pass the batch's uploader ids "
                             f"({'uploader_key' if self.exact_uploaders else 'uploader'})")
        up = rows_up.numpy()
        keep = up > 0
        r = np.broadcast_to(np.arange(up.shape[0])[:, None], up.shape)
        onehot = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (r[keep], up[keep])),
                               shape=(up.shape[0], self.uploader_table.num_embeddings))
        return sp.hstack([x, onehot]).tocsr()


SVM_C_GRID = (0.1, 0.25, 0.5, 1.0, 2.0)
#: Weights of the SVM margins (about +-1) in the mixed logits. Up to 64: on the validation rows of
#: both Bilibili bench splits every run chose 12, the top of the former grid, with the metric rising.
MIX_SCALE_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)


@torch.no_grad()
def choose_mix_scale(module: TfidfWide, score, grid: tuple[float, ...] = MIX_SCALE_GRID, pick=None) -> dict:
    """``head.tfidf_wide: mix``: set the weight of the fitted SVM's margins in the trained model's
    logits to the grid value that scores best on validation rows (0 = the deep model alone). With
    ``new_uploader_svm``, the text-only SVM's weight (``text_scale``, the rows of new uploaders) is
    then chosen the same way with ``scale`` fixed: the deep model's share is worth more where the SVM
    knows nothing of the uploader.

    Parameters
    ----------
    module : TfidfWide
        Built with ``mix=True`` and fitted (:func:`fit_linear_svm`).
    score : callable
        ``score()``: the validation metric of the model as it stands (a float, higher is better, or
        anything ``pick`` reads); called once per grid value with ``module.scale`` (and
        ``text_scale``) set to it.
    grid : tuple of float
        Candidate scales; ties keep the smaller one.
    pick : callable, optional
        ``pick({scale: score()}) -> scale``; None: the highest score.

    Returns
    -------
    dict with ``scale`` (the chosen one) and ``scores`` (``{scale: score()}``); with
    ``new_uploader_svm`` also ``text_scale`` and ``text_scores``.
    """
    if not module.mix:
        raise ValueError("choose_mix_scale needs a TfidfWide built with mix=True")
    scales = [module.scale] + ([module.text_scale] if module.text_table is not None else [])
    best, scores = search_grid(scales, score, grid, pick)
    out = {"scale": best, "scores": scores}
    if len(scales) > 1:
        out["text_scale"], out["text_scores"] = search_grid(scales[1:], score, grid, pick)
    return out


@torch.no_grad()
def search_grid(params, score, grid: tuple[float, ...], pick=None) -> tuple[float, dict]:
    """Fill every tensor of ``params`` with each grid value in turn, score the model, and leave them
    at the best one (ties keep the smaller value).

    Parameters
    ----------
    params : sequence of Tensor
        Scalar parameters or buffers set together.
    score : callable
        ``score()`` with ``params`` as set: a float, higher is better, or anything ``pick`` reads.
    grid : tuple of float
        Candidate values.
    pick : callable, optional
        ``pick({value: score()}) -> value``; None: the highest score (ties keep the smaller value).

    Returns
    -------
    (best value, ``{value: score}``)
    """
    scores = {}
    for s in sorted(grid):
        for p in params:
            p.fill_(float(s))
        scores[float(s)] = score() if pick is not None else float(score())
    best = pick(scores) if pick is not None else max(scores, key=lambda s: (scores[s], -s))
    for p in params:
        p.fill_(best)
    return best, scores


@torch.no_grad()
def fit_linear_svm(module: TfidfWide, x_train, y_train: np.ndarray, x_val=None, y_val: np.ndarray | None = None,
                   grid: tuple[float, ...] = SVM_C_GRID, seed: int = 0, text_c: float | None = None,
                   output_class: np.ndarray | None = None, node_targets: np.ndarray | None = None,
                   leaf_outputs: np.ndarray | None = None) -> dict:
    """Fit ``module``'s table and bias as a one-vs-rest linear SVM and freeze them (with
    ``new_uploader_svm`` also the text-only SVM, on the TF-IDF columns of the same rows).

    Parameters
    ----------
    module : TfidfWide
        Built with ``fitted=True``.
    x_train, x_val : scipy sparse ``[n, rows (+ uploader rows)]``
        :meth:`TfidfWide.features` of the training / validation rows.
    y_train, y_val : ndarray
        ``[n]`` int class of each row: its output index, or with ``output_class`` any class id
        (-1: no class; left out).
    grid : tuple of float
        ``C`` candidates; the one with the best validation accuracy is kept (the first without
        validation rows).
    seed : int
        ``LinearSVC``'s random state.
    text_c : float, optional
        The text-only SVM's C; None chooses it from ``grid`` on the validation rows whose uploader
        has no training row (all validation rows when fewer than :data:`MIN_NEW_VAL_ROWS`).
    output_class : ndarray, optional
        ``[n_out]`` int: the class whose margin each output takes (-1: none; such outputs get a bias
        below every class). None: output ``k`` is class ``k``. Several outputs may share a class:
        labels that stop at an internal node are one class, whose margin every leaf below it takes.
    node_targets : ndarray, optional
        ``[n, n_out]`` float 1 / 0 / -1 (unknown) per output node: the DHMCN heads' targets. Then
        each output is its own binary SVM (:func:`vtag.models.node_svm.fit_node_svc`) on the rows
        with a label, ``y_train`` / ``y_val`` give each row's primary node (C is chosen by the top
        leaf's accuracy on the validation rows) and ``output_class`` is not used.
    leaf_outputs : ndarray, optional
        With ``node_targets``: ``[L]`` the outputs that are leaves.

    Returns
    -------
    dict with ``C``, ``val_acc`` (None without validation rows), ``classes``, and with
    ``new_uploader_svm`` ``text_C`` and ``text_val_acc``.
    """
    if not module.fitted:
        raise ValueError("fit_linear_svm needs a TfidfWide built with fitted=True")
    n_out = module.bias.shape[0]
    if node_targets is not None:
        from vtag.models.node_svm import fit_node_svc

        node_targets = np.asarray(node_targets)
        tr = (node_targets > 0).any(axis=1)
        classes = np.arange(n_out)

        def fit(x, xv, yv, g):
            return fit_node_svc(x, node_targets[tr], g, xv, yv, leaf_outputs, seed)
    else:
        tr = y_train >= 0
        classes = np.unique(y_train[tr])
        if classes.size < 2:
            return {"C": None, "val_acc": None, "classes": int(classes.size)}

        def fit(x, xv, yv, g):
            return _fit_svc(x, y_train[tr], classes, g, xv, yv, seed)
    if not tr.any():
        return {"C": None, "val_acc": None, "classes": 0}
    va = None if y_val is None else y_val >= 0
    n_text = module.table.num_embeddings
    best_c, best, (coef, intercept) = fit(x_train[tr], None if va is None else x_val[va],
                                          None if va is None else y_val[va], grid)
    cols = (classes, classes) if node_targets is not None else _class_columns(n_out, classes, output_class)
    _set_table(module.table, cols, coef[:, :n_text])
    if module.uploader_table is not None:
        _set_table(module.uploader_table, cols, coef[:, n_text:])
    module.bias.copy_(torch.from_numpy(_full_bias(module.bias.shape[0], cols, intercept)))
    info = {"C": best_c, "val_acc": best, "classes": int(classes.size)}
    if module.text_table is None:
        return info
    fitted = np.zeros(module.uploader_fitted.shape[0], dtype=bool)
    fitted[np.unique(x_train[tr][:, n_text:].nonzero()[1])] = True
    fitted[0] = False
    module.uploader_fitted.copy_(torch.from_numpy(fitted))
    xv, yv = None, None
    if va is not None and va.any():
        up_val = x_val[:, n_text:].tocsr()
        new = np.asarray(up_val.multiply(fitted[None, :].astype(np.float32)).getnnz(axis=1) == 0) & va
        pick = new if new.sum() >= MIN_NEW_VAL_ROWS else va
        xv, yv = x_val[pick][:, :n_text], y_val[pick]
    text_grid = grid if text_c is None else (float(text_c),)
    info["text_C"], info["text_val_acc"], (coef, intercept) = fit(x_train[tr][:, :n_text], xv, yv, text_grid)
    _set_table(module.text_table, cols, coef)
    module.text_bias.copy_(torch.from_numpy(_full_bias(module.text_bias.shape[0], cols, intercept)))
    return info


#: Fewest validation rows of new uploaders that choose the text-only SVM's C on their own.
MIN_NEW_VAL_ROWS = 50


def _fit_svc(x, y, classes, grid, x_val, y_val, seed):
    """``(C, validation accuracy or None, (coef [classes, cols], intercept [classes]))``: a
    ``LinearSVC`` per C of ``grid`` scored on the validation rows, the best one kept (the first C
    without validation rows)."""
    from concurrent.futures import ThreadPoolExecutor

    from sklearn.svm import LinearSVC

    def fit(c):
        return LinearSVC(C=c, random_state=seed).fit(x, y)

    if x_val is not None and x_val.shape[0] and len(grid) > 1:
        # a thread per C, at most 4 (liblinear releases the GIL); every C's fit is held until the best is picked
        with ThreadPoolExecutor(max_workers=max(1, min(len(grid), os.cpu_count() or 1, 4))) as pool:
            fits = list(pool.map(fit, grid))
        accs = [float(np.mean(clf.predict(x_val) == y_val)) for clf in fits]
        k = int(np.argmax(accs))  # ties keep the first
        best_c, best, clf = grid[k], accs[k], fits[k]
        del fits
    else:
        best_c, best, clf = grid[0], None, fit(grid[0])
    coef, intercept = clf.coef_, clf.intercept_
    if classes.size == 2:  # binary: one hyperplane, class 1 positive
        coef, intercept = np.vstack([-coef[0], coef[0]]), np.array([-intercept[0], intercept[0]])
    return best_c, best, (coef, intercept)


def _class_columns(n_out: int, classes: np.ndarray, output_class: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(outputs, rank)``: the outputs that take a fitted class's margin, and that class's rank in
    ``classes`` (the sorted class ids the SVM was fitted on)."""
    if output_class is None:
        return classes.astype(np.int64), np.arange(classes.size)
    output_class = np.asarray(output_class, dtype=np.int64).reshape(-1)
    if output_class.size != n_out:
        raise ValueError(f"output_class has {output_class.size} entries for {n_out} outputs")
    rank = np.searchsorted(classes, output_class).clip(0, classes.size - 1)
    hit = classes[rank] == output_class
    return np.flatnonzero(hit), rank[hit]


def _set_table(table: nn.EmbeddingBag, cols: tuple[np.ndarray, np.ndarray], coef: np.ndarray) -> None:
    """Copy ``coef [classes, rows]`` into ``table.weight [rows, n_out]``: output ``cols[0][k]`` gets
    class ``cols[1][k]``'s weights; outputs without a class and the pad row 0 get zeros."""
    weight = np.zeros(tuple(table.weight.shape), dtype=np.float32)
    weight[:, cols[0]] = coef.T[:, cols[1]]
    weight[0] = 0.0
    table.weight.copy_(torch.from_numpy(weight))


def _full_bias(n_out: int, cols: tuple[np.ndarray, np.ndarray], intercept: np.ndarray) -> np.ndarray:
    """``[n_out]`` biases: the fitted intercepts, and below every one for outputs without a class."""
    bias = np.full(n_out, float(intercept.min()) - 1.0, dtype=np.float32)
    bias[cols[0]] = intercept[cols[1]]
    return bias
