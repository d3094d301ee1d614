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
"""

from __future__ import annotations

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
    """

    def __init__(self, n_keys: int, n_out: int, max_params: int, df: np.ndarray | None = None, n_docs: int = 0):
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

    def weights(self, bow_ids: torch.Tensor) -> torch.Tensor:
        """``[B, M]`` float32 per-position weights; an n-gram's positions sum to its TF-IDF value."""
        valid = bow_ids > 0
        same = (bow_ids.unsqueeze(2) == bow_ids.unsqueeze(1)) & valid.unsqueeze(1)  # [B, M, M]
        count = same.sum(dim=2).clamp_min(1).float()
        w = (1.0 + torch.log(count)) * self.idf[bow_ids] * valid
        norm = torch.sqrt((w * w / count).sum(dim=1, keepdim=True)).clamp_min(1e-6)
        return w / count / norm

    def forward(self, bow_ids: torch.Tensor) -> torch.Tensor:
        return self.table(self.row_of[bow_ids], per_sample_weights=self.weights(bow_ids))
