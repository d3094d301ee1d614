"""A boolean matrix as CSR index arrays (numpy only): the taxonomy's closure and exclusion rows at
any size, without a dense ``[N, N]`` matrix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class SparseRows:
    """A boolean ``[n_rows, n_cols]`` matrix as CSR index arrays (numpy only).

    ``indptr [n_rows + 1]`` and ``indices [nnz]`` int64: row i's true columns are
    ``indices[indptr[i]:indptr[i + 1]]``, ascending. Indexing gives dense rows: ``rows[i]`` is
    ``[n_cols]`` bool, ``rows[idx]`` (an int array) is ``[len(idx), n_cols]`` bool.
    """

    indptr: np.ndarray
    indices: np.ndarray
    n_cols: int

    @classmethod
    def from_rows(cls, rows: Mapping[int, Iterable[int]], n_rows: int, n_cols: int) -> SparseRows:
        """From ``{row: ascending columns}``; rows not given are empty."""
        lengths = np.zeros(n_rows, dtype=np.int64)
        lists = {int(r): np.asarray(list(c), dtype=np.int64) for r, c in rows.items()}
        for r, c in lists.items():
            lengths[r] = c.size
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = np.empty(int(indptr[-1]), dtype=np.int64)
        for r, c in lists.items():
            indices[indptr[r] : indptr[r + 1]] = c
        return cls(indptr, indices, n_cols)

    @property
    def n_rows(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_rows, self.n_cols

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def row(self, i: int) -> np.ndarray:
        """Row ``i``'s true columns, ascending (a view)."""
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    def take(self, rows: np.ndarray, col_map: np.ndarray | None = None) -> SparseRows:
        """The rows ``rows`` (in that order), columns renamed by ``col_map`` (old -> new) when given
        (the new rows are then not sorted)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.indptr[rows + 1] - self.indptr[rows]
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        src = np.repeat(self.indptr[rows] - indptr[:-1], lengths) + np.arange(int(indptr[-1]))
        indices = self.indices[src]
        if col_map is not None:
            indices = np.asarray(col_map, dtype=np.int64)[indices]
        return SparseRows(indptr, indices, self.n_cols)

    def dense(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``[len(rows), n_cols]`` bool (all rows when ``rows`` is None)."""
        sub = self if rows is None else self.take(rows)
        out = np.zeros((sub.n_rows, self.n_cols), dtype=bool)
        out[np.repeat(np.arange(sub.n_rows), np.diff(sub.indptr)), sub.indices] = True
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if np.ndim(key) == 0:
            return self.dense(np.array([int(key)]))[0]
        return self.dense(np.asarray(key, dtype=np.int64).ravel()).reshape(*np.shape(key), self.n_cols)

    def to_scipy(self):
        """The same matrix as a ``scipy.sparse.csr_array`` of bool (imports scipy)."""
        import scipy.sparse as sp

        return sp.csr_array((np.ones(self.nnz, dtype=bool), self.indices, self.indptr), shape=self.shape)
