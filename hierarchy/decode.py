"""Consistent decoding: from per-node scores to a label set that obeys the taxonomy.

Input: ``scores [B, N]`` float, one column per node in taxonomy order (``taxonomy.ids``), values in
[0, 1] (probabilities; the implicit root has no column).

Policy, in three steps:

1. **Consistent scores** (:func:`make_consistent`): every parent scores at least its best child,
   ``c[p] = max(s[p], max_{child k} c[k])``. This is the max-constraint of C-HMCNN; scores only grow.
2. **Primary path**: the root-to-leaf path with the highest sum of ``log c`` over its nodes — the
   product of the consistent scores along the path. Because every term is ``<= 0``, a leaf at
   level 3 competes fairly with one at level 5 only if the deeper nodes are confident. Ties go to
   the lower node index (shallower level first, then id). The path's label set is
   ``closure_matrix[leaf]``: the path plus what it requires plus their ancestors; the taxonomy
   validator guarantees that this set never holds two members of one ``exclusive`` group.
   ``primary="top_leaf"`` takes instead the path of the leaf with the highest consistent score
   (ties: lower node index). For a softmax over the leaves with labels that stop at internal
   nodes, whose within-label split of the mass is untrained, the path product weighs that split
   and the top leaf does not (docs/model.md, "Partial labels"). ``label_nodes`` (the nodes the
   training labels name, when some are internal) then walks the primary leaf up to the deepest of
   them on its path, so a branch labeled only coarsely ends at its coarse label and a branch
   labeled to its leaves at a leaf, as a classifier over the label nodes would.
3. **Extra labels**: a node whose consistent score reaches the threshold of its level
   (``thresholds``: one float for all levels, or ``{level: float}`` with missing levels at 0.5) is
   a candidate. Candidates are tried greedily in descending score (ties: lower node index first);
   one is accepted with its whole closure when that closure adds no member of an exclusive group
   another member of which is already labelled; otherwise it is dropped. Candidates already
   implied by earlier labels are no-ops. At most ``max_candidates`` (default 32) candidates per row
   are tried — the greedy is exact for rows with at most that many candidates, which is the normal
   case for peaky model outputs; for a row with more, only its top ``max_candidates`` are tried
   (which ones win a tie at the cut is unspecified).

The result (:class:`DecodedBatch`) is therefore always closed under ancestors and ``requires`` and
never breaks an ``exclusive`` group. Everything is vectorised over the batch: steps 1-2 cost
O(B·N) per level, step 3 is ``max_candidates`` rounds of O(B·G) work (G = exclusive groups) over the
rows that have candidates.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from numbers import Real
from typing import Mapping

import numpy as np

from vtag.hierarchy.taxonomy import SparseRows, Taxonomy

#: primary-node rules of :class:`Decoder` (``decode.primary``); the first is the default
PRIMARY_RULES = ("path", "top_leaf")
#: log(0) guard: consistent scores are clipped to this before the log.
_TINY = np.float32(1e-30)
#: up to this many nodes the plan keeps the closure as a dense ``[N, N]`` bool matrix (64 MiB at
#: the limit; ~1 MiB for the usual ~1k nodes); above it, sparse rows made dense per lookup
_DENSE_CLOSURE_NODES = 8192


# ---------------------------------------------------------------------- per-taxonomy plan
class _Plan:
    """Index arrays derived once per taxonomy (the taxonomy itself is immutable).

    The hot loops run in a private *work order* of the columns: by level, then by number of
    children (most first), then by taxonomy index. So each level is a contiguous block, its leaves
    are a contiguous suffix of that block, and the parents that have more than r children are a
    contiguous prefix — every step is a slice or an ``np.take`` along axis 1 (numpy's fancy column
    indexing and ``reduceat`` are several times slower on ``[B, N]`` arrays).
    """

    def __init__(self, taxonomy: Taxonomy):
        t = taxonomy
        self.n = n = t.n_nodes
        fanout = np.array([len(node.children) for node in t.nodes], dtype=np.int64)
        #: work position -> taxonomy index, and back
        self.perm = np.lexsort((np.arange(n), -fanout, t.levels))
        self.pos = np.empty(n, dtype=np.int64)
        self.pos[self.perm] = np.arange(n)
        w_level, w_fanout = t.levels[self.perm], fanout[self.perm]
        w_parent = np.where(t.parent_index[self.perm] >= 0, self.pos[t.parent_index[self.perm]], -1)
        #: work position -> its parent's work position (-1 for level 1)
        self.w_parent = w_parent
        self.level_slices: list[slice] = []
        for lvl in range(1, t.max_depth + 1):
            idx = np.flatnonzero(w_level == lvl)
            self.level_slices.append(slice(int(idx[0]), int(idx[-1]) + 1))
        #: per level >= 2: work positions of the parents of that level's nodes
        self.parent_of_level = [w_parent[sl] for sl in self.level_slices[1:]]
        #: per level: the leaves' slice (a suffix of the level's block; empty when none)
        self.leaf_slices = []
        for sl in self.level_slices:
            k = int((w_fanout[sl] == 0).sum())
            self.leaf_slices.append(slice(sl.stop - k, sl.stop))
        # make_consistent, deepest parents first: (start, m, child_r) means "parents at work
        # positions start..start+m-1 take the max with their r-th child, at work positions child_r".
        children: dict[int, list[int]] = {}
        for child in range(n):
            if w_parent[child] >= 0:
                children.setdefault(int(w_parent[child]), []).append(child)
        self.up: list[tuple[int, int, np.ndarray]] = []
        for sl in reversed(self.level_slices[:-1]):
            for r in range(int(w_fanout[sl].max(initial=0))):
                m = int((w_fanout[sl] > r).sum())
                child_r = np.array([children[p][r] for p in range(sl.start, sl.start + m)], dtype=np.int64)
                self.up.append((sl.start, m, child_r))
        # Constraint tables, all in work order.
        sparse = t.closure_sparse.take(self.perm, self.pos)
        #: row c = what tagging c implies: ``[N, N]`` bool, or for a taxonomy of more than
        #: _DENSE_CLOSURE_NODES nodes the sparse rows (indexing gives the same dense rows)
        self.closure: np.ndarray | SparseRows = sparse.dense() if n <= _DENSE_CLOSURE_NODES else sparse
        # Exclusive groups as "which member of group g (work position) tagging c brings in", -1 for
        # none. The validator guarantees a closure holds at most one member of each group.
        groups = t.constraints.exclusive
        self.group_member = np.full((n, len(groups)), -1, dtype=np.int64)
        if isinstance(self.closure, np.ndarray):
            closure = self.closure
            for g, members in enumerate(groups):
                midx = self.pos[[t.index[m] for m in members]]
                hit = closure[:, midx]  # [N, |group|]
                has = hit.any(axis=1)
                self.group_member[has, g] = midx[hit[has].argmax(axis=1)]
        elif groups:
            member_of: dict[int, list[int]] = {}
            for g, members in enumerate(groups):
                for m in members:
                    member_of.setdefault(int(self.pos[t.index[m]]), []).append(g)
            mem = SparseRows.from_rows(member_of, n, len(groups))  # work position -> its groups
            n_groups = np.diff(mem.indptr)
            rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(sparse.indptr))
            hit = n_groups[sparse.indices] > 0
            rows, cols = rows[hit], sparse.indices[hit]
            reps = n_groups[cols]
            src = np.repeat(mem.indptr[cols] - np.cumsum(reps) + reps, reps) + np.arange(int(reps.sum()))
            self.group_member[np.repeat(rows, reps), mem.indices[src]] = np.repeat(cols, reps)
        #: work positions of nodes with ``requires`` rules: their closure is more than their path
        self.requiring = np.array(sorted(self.pos[t.index[a]] for a in t.constraints.requires), dtype=np.int64)

    def to_work(self, scores: np.ndarray) -> np.ndarray:
        """``[B, N]`` taxonomy order -> a new ``[B, N]`` float32 array in work order."""
        return np.take(scores, self.perm, axis=1).astype(np.float32, copy=False)

    def from_work(self, work: np.ndarray) -> np.ndarray:
        return np.take(work, self.pos, axis=1)

    def consistent_inplace(self, work: np.ndarray) -> None:
        """Max-constraint on ``work [B, N]`` (work order), in place, deepest level first. On a bool
        array this is the ancestor closure (a parent is set when any child is)."""
        for start, m, child_r in self.up:
            parents = work[:, start : start + m]
            np.maximum(parents, np.take(work, child_r, axis=1), out=parents)


_PLANS: weakref.WeakKeyDictionary[Taxonomy, _Plan] = weakref.WeakKeyDictionary()


def _plan(taxonomy: Taxonomy) -> _Plan:
    plan = _PLANS.get(taxonomy)
    if plan is None:
        plan = _PLANS[taxonomy] = _Plan(taxonomy)
    return plan


def _check_scores(scores: np.ndarray, taxonomy: Taxonomy) -> np.ndarray:
    arr = np.asarray(scores)
    if arr.ndim != 2 or arr.shape[1] != taxonomy.n_nodes:
        raise ValueError(
            f"scores must have shape [batch, {taxonomy.n_nodes}] (one column per node of taxonomy "
            f"{taxonomy.label or taxonomy.version}), got {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"scores must be real numbers, got dtype {arr.dtype}")
    return arr


# ---------------------------------------------------------------------- step 1
def make_consistent(scores: np.ndarray, taxonomy: Taxonomy) -> np.ndarray:
    """``scores [B, N]`` -> new ``[B, N]`` float32 where each parent is at least its best child.

    Works level by level from the deepest up, so a grandchild's score reaches the grandparent.
    Raises ``ValueError`` on a wrong shape or on NaN.
    """
    arr = _check_scores(scores, taxonomy)
    plan = _plan(taxonomy)
    work = plan.to_work(arr)
    if np.isnan(work).any():
        raise ValueError("scores contain NaN")
    plan.consistent_inplace(work)
    return plan.from_work(work)


# ---------------------------------------------------------------------- result
@dataclass(frozen=True)
class DecodedBatch:
    """Decoding of ``B`` rows.

    ``consistent [B, N]`` float32: the consistent scores; ``leaf [B]`` int64: node index of the
    primary leaf; ``leaf_score [B]`` float32: its consistent score; ``path_logscore [B]`` float32:
    the sum of log consistent scores along the primary path; ``labels [B, N]`` bool: primary path
    + extras, closed under ancestors and ``requires``, at most one member of each exclusive group.
    """

    taxonomy: Taxonomy
    consistent: np.ndarray
    leaf: np.ndarray
    leaf_score: np.ndarray
    path_logscore: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.leaf.shape[0])

    def leaf_id(self, i: int) -> str:
        return self.taxonomy.ids[int(self.leaf[i])]

    def path_ids(self, i: int) -> list[str]:
        """Row ``i``'s primary path, ids from level 1 to the leaf."""
        return self.taxonomy.path(self.leaf_id(i))

    def path_names(self, i: int) -> list[str]:
        """Row ``i``'s primary path, display names from level 1 to the leaf."""
        return self.taxonomy.path_names(self.leaf_id(i))

    def tags(self, i: int) -> list[dict]:
        """Row ``i``'s labels as ``{node_id, name, level, score}`` dicts (score: consistent score),
        sorted by level, then descending score, then id — the ``tags`` column of ``video_tags``."""
        t = self.taxonomy
        idx = np.flatnonzero(self.labels[i])
        scores = self.consistent[i, idx]
        order = np.lexsort((idx, -scores, t.levels[idx]))
        return [
            {
                "node_id": t.ids[j],
                "name": t.nodes[j].name,
                "level": int(t.levels[j]),
                "score": float(self.consistent[i, j]),
            }
            for j in idx[order]
        ]


# ---------------------------------------------------------------------- steps 2-3
#: rows through steps 1-2 at once: a [256, ~1000] float32 block stays in cache through all passes
_BLOCK_ROWS = 256
#: rows through step 3 at once: its loop runs per round, so larger blocks amortise the call overhead
_EXTRA_ROWS = 4096


class Decoder:
    """Turns score matrices into label sets for one taxonomy; see the module docstring.

    ``thresholds``: one float for every level, or ``{level: float}`` (levels 1..max_depth; missing
    levels use 0.5). A threshold above 1 switches extras off for that level. Scores are compared
    with the thresholds in float32, so a score of 0.9 passes a threshold of 0.9.
    ``max_candidates``: extra-label candidates tried per row (>= 0; 0 = primary path only).
    ``stop_threshold``: None (default) always ends the primary path at a leaf; a number makes
    leaf prediction non-mandatory — the primary node is the deepest node of the best path whose
    consistent score reaches it (a level-1 node at least), so a row whose children are all unsure
    stops at an internal node (for labels that stop at internal nodes; see docs/model.md).
    ``primary``: ``"path"`` (default) ends the primary path at the leaf of the best path product;
    ``"top_leaf"`` at the leaf with the highest consistent score (see the module docstring). The
    stop threshold then walks either one up.
    ``label_nodes``: None (default: any node), or the node indices the primary node may be (the
    training labels' nodes): the primary leaf is walked up to the deepest of them on its path (kept
    when none is), and the stop threshold walks from one of them to the next above.
    """

    def __init__(
        self,
        taxonomy: Taxonomy,
        thresholds: float | Mapping[int, float] = 0.5,
        max_candidates: int = 32,
        stop_threshold: float | None = None,
        primary: str = "path",
        label_nodes=None,
    ):
        self.taxonomy = taxonomy
        if primary not in PRIMARY_RULES:
            raise ValueError(f"primary must be one of {', '.join(PRIMARY_RULES)}, got {primary!r}")
        self.primary = primary
        self._plan = _plan(taxonomy)
        self.label_nodes = None if label_nodes is None else np.unique(np.asarray(label_nodes, dtype=np.int64))
        # [N] work order: the node the stop threshold walks up to (the parent, or with label_nodes
        # the nearest strict ancestor among them), -1 at the top
        self._up = self._plan.w_parent
        self._allowed = None
        if self.label_nodes is not None:
            if self.label_nodes.size == 0 or self.label_nodes[0] < 0 or self.label_nodes[-1] >= taxonomy.n_nodes:
                raise ValueError(f"label_nodes must be node indices in 0..{taxonomy.n_nodes - 1}, at least one")
            self._allowed = np.zeros(taxonomy.n_nodes, dtype=bool)
            self._allowed[self._plan.pos[self.label_nodes]] = True
            self._up = self._nearest_allowed_above()
        if stop_threshold is not None:
            if isinstance(stop_threshold, bool) or not isinstance(stop_threshold, Real) \
                    or not 0.0 <= float(stop_threshold) <= 1.0:
                raise ValueError(f"stop_threshold must be None or a number in [0, 1], got {stop_threshold!r}")
            stop_threshold = float(stop_threshold)
        self.stop_threshold = stop_threshold
        #: ``[max_depth]`` float64: entry h-1 is the threshold of level h
        self.thresholds = _level_thresholds(taxonomy, thresholds)
        if isinstance(max_candidates, bool) or not isinstance(max_candidates, (int, np.integer)) \
                or max_candidates < 0:
            raise ValueError(f"max_candidates must be a non-negative int, got {max_candidates!r}")
        self.max_candidates = int(max_candidates)
        # [N] float32 in work order: the threshold of each node's level
        self._work_threshold = self.thresholds[taxonomy.levels[self._plan.perm] - 1].astype(np.float32)

    def __repr__(self) -> str:
        return (f"Decoder(taxonomy={self.taxonomy.label or self.taxonomy.version!r}, "
                f"thresholds={self.thresholds.tolist()}, max_candidates={self.max_candidates}, "
                f"stop_threshold={self.stop_threshold}, primary={self.primary!r}, "
                f"label_nodes={None if self.label_nodes is None else self.label_nodes.size})")

    def _nearest_allowed_above(self) -> np.ndarray:
        """``[N]`` work order: each node's nearest strict ancestor in ``label_nodes``, -1 if none
        (level by level down the plan's level slices: a parent's entry is set before its children's)."""
        plan = self._plan
        up = np.full(plan.n, -1, dtype=np.int64)
        for sl, par in zip(plan.level_slices[1:], plan.parent_of_level):
            up[sl] = np.where(self._allowed[par], par, up[par])
        return up

    def decode(self, scores: np.ndarray) -> DecodedBatch:
        """``scores [B, N]`` in [0, 1] (taxonomy order) -> :class:`DecodedBatch`. Raises
        ``ValueError`` on a wrong shape or on values outside [0, 1] (NaN included)."""
        arr = _check_scores(scores, self.taxonomy)
        plan = self._plan
        b = arr.shape[0]
        work = np.empty((b, plan.n), dtype=np.float32)  # consistent scores, work order
        leaf_w = np.empty(b, dtype=np.int64)
        logscore = np.empty(b, dtype=np.float32)
        for lo in range(0, b, _BLOCK_ROWS):
            hi = min(lo + _BLOCK_ROWS, b)
            block = work[lo:hi]
            block[...] = plan.to_work(arr[lo:hi])
            if not (block.min() >= 0.0 and block.max() <= 1.0):  # NaN fails both tests
                row, col = np.argwhere(~((arr[lo:hi] >= 0.0) & (arr[lo:hi] <= 1.0)))[0]
                raise ValueError(
                    f"scores must lie in [0, 1]; row {lo + row}, node {self.taxonomy.ids[col]!r} "
                    f"holds {arr[lo + row, col]!r}"
                )
            plan.consistent_inplace(block)
            leaf_w[lo:hi], logscore[lo:hi] = self._primary(block)
        if self._allowed is not None:
            leaf_w = self._to_label_node(leaf_w)
        if self.stop_threshold is not None:
            leaf_w = self._stop(work, leaf_w)
        labels = plan.closure[leaf_w]  # [B, N] bool, work order
        if self.max_candidates:
            for lo in range(0, b, _EXTRA_ROWS):
                hi = min(lo + _EXTRA_ROWS, b)
                self._extras(work[lo:hi], leaf_w[lo:hi], labels[lo:hi])
        return DecodedBatch(
            taxonomy=self.taxonomy,
            consistent=plan.from_work(work),
            leaf=plan.perm[leaf_w],
            leaf_score=work[np.arange(b), leaf_w],
            path_logscore=logscore,
            labels=plan.from_work(labels),
        )

    def _primary(self, work: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Primary leaf of consistent ``work [b, N]``: the best path by cumulative log score, summed
        level by level down the tree (``primary="top_leaf"``: the leaf with the highest score)
        -> (leaf [b] work position, the path's log score [b] float32)."""
        plan = self._plan
        cum = np.maximum(work, _TINY)
        np.log(cum, out=cum)
        for sl, par in zip(plan.level_slices[1:], plan.parent_of_level):
            cum[:, sl] += np.take(cum, par, axis=1)
        rows = np.arange(cum.shape[0])
        best_pos = np.zeros(cum.shape[0], dtype=np.int64)
        best_val = np.full(cum.shape[0], -np.inf, dtype=np.float32)
        key = cum if self.primary == "path" else work
        # Leaves sit in taxonomy order inside each level's suffix; going from shallow to deep with a
        # strict ">" keeps ties at the lowest taxonomy index.
        for sl in plan.leaf_slices:
            if sl.start == sl.stop:
                continue
            block = key[:, sl]
            arg = block.argmax(axis=1)
            val = block[rows, arg]
            better = val > best_val
            best_pos[better] = arg[better] + sl.start
            best_val[better] = val[better]
        return best_pos, cum[rows, best_pos]

    def _to_label_node(self, leaf_w: np.ndarray) -> np.ndarray:
        """Each primary leaf (work position) walked up to the deepest ``label_nodes`` member on its
        path; kept where the path has none."""
        up = np.where(self._allowed[leaf_w], leaf_w, self._up[leaf_w])
        return np.where(up >= 0, up, leaf_w)

    def _stop(self, work: np.ndarray, leaf_w: np.ndarray) -> np.ndarray:
        """Walk each row's primary node up its path while its consistent score is below
        ``stop_threshold`` (scores only grow upwards, so this is the deepest node that reaches it;
        with ``label_nodes``, the deepest of them)."""
        parent = self._up
        rows = np.arange(work.shape[0])
        cur = leaf_w.copy()
        thr = np.float32(self.stop_threshold)
        for _ in range(self.taxonomy.max_depth - 1):
            move = (work[rows, cur] < thr) & (parent[cur] >= 0)
            if not move.any():
                break
            cur[move] = parent[cur[move]]
        return cur

    def _extras(self, work: np.ndarray, leaf_w: np.ndarray, labels: np.ndarray) -> None:
        """Greedy extra labels, in place on ``labels [b, N]`` (work order; ``work``: consistent)."""
        plan = self._plan
        cand = work >= self._work_threshold
        cand &= ~labels
        active = np.flatnonzero(cand.any(axis=1))
        if not active.size:
            return
        k = min(self.max_candidates, plan.n)
        masked = np.where(cand[active], work[active], np.float32(-1.0))  # [A, N]; -1: no candidate
        if k < plan.n:
            top = np.argpartition(masked, plan.n - k, axis=1)[:, plan.n - k :]
        else:
            top = np.broadcast_to(np.arange(plan.n), masked.shape)
        top_scores = np.take_along_axis(masked, top, axis=1)
        order = np.lexsort((plan.perm[top], -top_scores), axis=1)  # score desc, taxonomy index asc
        top = np.take_along_axis(top, order, axis=1)  # [A, k] work positions, best first
        accept = np.take_along_axis(top_scores, order, axis=1) >= 0.0  # [A, k]
        if plan.group_member.shape[1]:
            # Which member of each exclusive group the row holds so far (-1: none). A candidate the
            # labels already imply brings only members already held, so it passes as a no-op.
            held = plan.group_member[leaf_w[active]]  # [A, G]
            for r in range(k):
                brings = plan.group_member[top[:, r]]  # [A, G]
                clash = ((brings >= 0) & (held >= 0) & (brings != held)).any(axis=1)
                accept[:, r] &= ~clash
                np.copyto(held, brings, where=accept[:, r, None] & (brings >= 0))
        # labels |= closure of every accepted candidate: mark them, close under ancestors, then add
        # the closures of the marked nodes that carry requires rules.
        mark = np.zeros((active.size, plan.n), dtype=bool)
        rows = np.broadcast_to(np.arange(active.size)[:, None], top.shape)
        mark[rows[accept], top[accept]] = True
        plan.consistent_inplace(mark)
        for a in plan.requiring:
            hit = np.flatnonzero(mark[:, a])
            if hit.size:
                mark[hit] |= plan.closure[a]
        labels[active] |= mark


def _level_thresholds(taxonomy: Taxonomy, thresholds: float | Mapping[int, float]) -> np.ndarray:
    """-> ``[max_depth]`` float64, entry h-1 for level h."""
    depth = taxonomy.max_depth

    def check(value: object, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value) or value < 0:
            raise ValueError(f"threshold {what} must be a finite number >= 0, got {value!r}")
        return float(value)

    if isinstance(thresholds, Mapping):
        out = np.full(depth, 0.5)
        for level, value in thresholds.items():
            try:
                lvl = int(level)
            except (TypeError, ValueError):
                raise ValueError(f"threshold levels must be integers, got {level!r}") from None
            if not 1 <= lvl <= depth:
                raise ValueError(f"threshold for level {lvl}: the taxonomy has levels 1..{depth}")
            out[lvl - 1] = check(value, f"for level {lvl}")
        return out
    return np.full(depth, check(thresholds, "value"))
