"""Hierarchical heads: ``flat``, ``dhmcn_v1`` (HMCN-F), ``dhmcn_v2`` (dense), ``dhmcn_v3`` (dense +
cascade), optional C-HMCNN max-constraint, and their loss.

The structure comes as a :class:`HierarchySpec` — plain arrays, so the heads work on any tree or DAG
(e.g. the HMC benchmark data sets, given C-HMCNN's ``R``) as well as on a :class:`Taxonomy`
(:meth:`HierarchySpec.from_taxonomy`, node order = taxonomy node order). A head maps features
``x [B, D]`` to a dict whose ``prob [B, N]`` are the final node probabilities; ``head.loss(out, y)``
takes multi-hot, ancestor-closed targets ``y [B, N]`` (-1 marks an unknown node: below a partial
label; every term skips it, and the flat head's loss is then the log of the mass of those leaves).

Outputs per head (all ``[B, N]`` unless said):

- ``flat``: ``leaf_logits [B, n_leaves]``; ``prob`` = leaf softmax summed over each node's leaves
  (so a parent is exactly the sum of its children's mass and decoding works as for the others).
- ``dhmcn_v1`` / ``v2`` / ``v3``: ``global_logits``, ``local_logits`` (each node's logit from its
  own level's local output), ``fused = β·σ(local) + (1-β)·σ(global)`` (v3: then cascaded),
  ``prob`` = ``fused`` or, with ``max_constraint``, ``MCM(fused)``.

Loss (:func:`hierarchical_loss`): weighted sum of BCE on global, local and fused outputs (fused
through C-HMCNN's MCLoss when ``max_constraint``), HMCN-F's violation penalty
``mean(max(0, p_child - p_parent)^2)`` over the edges of ``fused``, and for ``flat`` a soft cross
entropy over leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_LOSS_WEIGHTS = {"global": 1.0, "local": 1.0, "fused": 1.0, "violation": 0.1, "leaf": 1.0,
                        "leaf_smoothing": 0.0}


# ---------------------------------------------------------------------------------------- structure
@dataclass(frozen=True)
class HierarchySpec:
    """A hierarchy as arrays.

    ``R [N, N]`` bool — ``R[i, j]`` iff j is i or a descendant of i (C-HMCNN); ``level [N]`` int64
    (1 = top; in a DAG the longest path from a top node, so every edge goes to a deeper level);
    ``edges [E, 2]`` int64 — direct (parent, child) pairs. Build with a ``from_*`` constructor.
    """

    R: np.ndarray
    level: np.ndarray
    edges: np.ndarray

    @property
    def n_nodes(self) -> int:
        return int(self.R.shape[0])

    @property
    def n_levels(self) -> int:
        return int(self.level.max())

    def level_indices(self) -> list[np.ndarray]:
        """Node indices per level, level 1 first."""
        return [np.flatnonzero(self.level == h).astype(np.int64) for h in range(1, self.n_levels + 1)]

    @property
    def leaves(self) -> np.ndarray:
        """Node indices without a strict descendant."""
        strict = self.R & ~np.eye(self.n_nodes, dtype=bool)
        return np.flatnonzero(~strict.any(axis=1)).astype(np.int64)

    def top_ancestors(self) -> np.ndarray:
        """``[N, n_level1]`` bool: ``[j, a]`` iff level-1 node a is j or an ancestor of j."""
        top = np.flatnonzero(self.level == 1)
        return self.R[top].T.copy()

    # -- constructors
    @classmethod
    def from_ancestor_matrix(cls, R: np.ndarray, level_indices: Sequence[Sequence[int]] | None = None
                             ) -> HierarchySpec:
        """From C-HMCNN's ``R`` (diagonal forced true); edges = the transitive reduction of R.

        Levels: ``level_indices`` (node indices per level, level 1 first; every node once, every
        edge going to a deeper level) or, by default, the longest path from a top node.
        Raises ValueError if R has a cycle, is not transitively closed, or the levels do not fit.
        """
        R = np.asarray(R).astype(bool).copy()
        n = R.shape[0]
        if R.ndim != 2 or R.shape[1] != n:
            raise ValueError(f"R must be square, got {R.shape}")
        np.fill_diagonal(R, True)
        strict = R & ~np.eye(n, dtype=bool)
        if (strict & strict.T).any():
            raise ValueError("R has a cycle: two nodes are each other's descendant")
        sf = strict.astype(np.float32)
        via = (sf @ sf) > 0  # j reachable from i through some k (BLAS: fast for thousands of nodes)
        if (via & ~strict).any():
            raise ValueError("R is not transitively closed")
        direct = strict & ~via  # parent -> child edges: no node strictly between them
        edges = np.argwhere(direct).astype(np.int64)  # rows (parent, child)
        if level_indices is not None:
            level = np.zeros(n, dtype=np.int64)
            for h, idx in enumerate(level_indices, start=1):
                idx = np.asarray(idx, dtype=np.int64)
                if (level[idx] != 0).any():
                    raise ValueError(f"level_indices: a node of level {h} is listed twice")
                level[idx] = h
            if (level == 0).any():
                raise ValueError(f"level_indices: node {int(np.flatnonzero(level == 0)[0])} has no level")
            if len(edges) and (level[edges[:, 0]] >= level[edges[:, 1]]).any():
                raise ValueError("level_indices: an edge does not go to a deeper level")
            return cls(R=R, level=level, edges=edges)
        n_anc = strict.sum(axis=0)  # ancestors per node: increases along every edge
        level = np.ones(n, dtype=np.int64)
        for j in np.argsort(n_anc, kind="stable"):
            parents = np.flatnonzero(direct[:, j])
            if parents.size:
                level[j] = level[parents].max() + 1
        return cls(R=R, level=level, edges=edges)

    @classmethod
    def from_parents(cls, parent_index: Sequence[int]) -> HierarchySpec:
        """From a tree's ``[N]`` parent index (-1 for top nodes)."""
        parent = np.asarray(parent_index, dtype=np.int64)
        n = parent.shape[0]
        R = np.eye(n, dtype=bool)
        for j in range(n):
            p, seen = parent[j], 0
            while p >= 0:
                R[p, j] = True
                p, seen = parent[p], seen + 1
                if seen > n:
                    raise ValueError("parent_index has a cycle")
        return cls.from_ancestor_matrix(R)

    @classmethod
    def from_taxonomy(cls, taxonomy) -> HierarchySpec:
        """From a :class:`vtag.hierarchy.taxonomy.Taxonomy` (node order = taxonomy node order)."""
        parent = taxonomy.parent_index
        child = np.flatnonzero(parent >= 0)
        edges = np.stack([parent[child], child], axis=1).astype(np.int64)
        return cls(R=taxonomy.ancestor_matrix(), level=taxonomy.levels.astype(np.int64), edges=edges)


class _Structure(nn.Module):
    """Buffers derived from a spec, shared by heads and losses (moved with the module)."""

    def __init__(self, spec: HierarchySpec):
        super().__init__()
        self.n_nodes = spec.n_nodes
        self.n_levels = spec.n_levels
        levels = spec.level_indices()
        self.level_sizes = [int(x.size) for x in levels]
        perm = np.concatenate(levels)
        self.register_buffer("level_perm_inv", torch.as_tensor(np.argsort(perm), dtype=torch.long), persistent=False)
        self.register_buffer("edge_parent", torch.as_tensor(spec.edges[:, 0].copy()), persistent=False)
        self.register_buffer("edge_child", torch.as_tensor(spec.edges[:, 1].copy()), persistent=False)
        edge_level = spec.level[spec.edges[:, 0]] if len(spec.edges) else np.zeros(0, dtype=np.int64)
        # edges grouped by parent level, deepest first: the max-constraint sweep order
        self.mcm_groups = [np.flatnonzero(edge_level == h) for h in range(self.n_levels - 1, 0, -1)]
        for k, g in enumerate(self.mcm_groups):
            self.register_buffer(f"mcm_edges_{k}", torch.as_tensor(g, dtype=torch.long), persistent=False)
        self.register_buffer("top_idx", torch.as_tensor(np.flatnonzero(spec.level == 1), dtype=torch.long), persistent=False)
        self.register_buffer("top_anc", torch.as_tensor(spec.top_ancestors(), dtype=torch.bool), persistent=False)
        self.register_buffer("is_top", torch.as_tensor(spec.level == 1), persistent=False)
        leaves = spec.leaves
        self.register_buffer("leaf_idx", torch.as_tensor(leaves), persistent=False)
        self.register_buffer("leaf_to_node", torch.as_tensor(spec.R[:, leaves].T.astype(np.float32)), persistent=False)

    def scatter_levels(self, per_level: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-level ``[B, n_h]`` tensors -> ``[B, N]`` in node order."""
        return torch.cat(list(per_level), dim=1).index_select(1, self.level_perm_inv)

    def max_constraint(self, p: torch.Tensor) -> torch.Tensor:
        """C-HMCNN MCM: ``out_i = max_{j: R[i, j]} p_j`` — one sweep over the edges, deepest parents
        first (every edge goes to a deeper level), O(B·E) instead of O(B·N²)."""
        out = p
        for k in range(len(self.mcm_groups)):
            idx = getattr(self, f"mcm_edges_{k}")
            if idx.numel() == 0:
                continue
            par, ch = self.edge_parent[idx], self.edge_child[idx]
            src = out.index_select(1, ch)
            out = out.scatter_reduce(1, par.unsqueeze(0).expand(out.shape[0], -1), src, reduce="amax", include_self=True)
        return out

    def cascade(self, p: torch.Tensor) -> torch.Tensor:
        """DHMCN v3 cascade: nodes below level 1 are scaled by their level-1 ancestor's probability
        (the max over several in a DAG); level-1 nodes are unchanged. ``[B, N] -> [B, N]``."""
        top = p.index_select(1, self.top_idx)  # [B, n1]
        gate = (top.unsqueeze(1) * self.top_anc.to(p.dtype).unsqueeze(0)).amax(dim=2)  # [B, N]
        return torch.where(self.is_top.unsqueeze(0), p, p * gate)


def cascade_weight(prob: torch.Tensor, spec: HierarchySpec) -> torch.Tensor:
    """Functional form of the v3 cascade (for tests and analysis)."""
    return _Structure(spec).to(prob.device).cascade(prob)


def max_constraint(prob: torch.Tensor, spec: HierarchySpec) -> torch.Tensor:
    """Functional form of C-HMCNN's MCM."""
    return _Structure(spec).to(prob.device).max_constraint(prob)


# ---------------------------------------------------------------------------------------- loss
def _bce_prob(p: torch.Tensor, y: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    eps = 1e-6
    return F.binary_cross_entropy(p.clamp(eps, 1.0 - eps), y, weight=known)


def split_targets(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Targets with -1 for unknown nodes (partial labels) -> ``(y in {0, 1}, known mask or None)``;
    the mask is None when every node is known, so fully labeled batches take the plain path."""
    y = targets.float()
    unknown = y < 0
    if not bool(unknown.any()):
        return y, None
    return y.clamp_min(0.0), (~unknown).float()


def hierarchical_loss(outputs: dict, targets: torch.Tensor, structure: _Structure, weights: dict,
                      max_constraint: bool = False) -> dict[str, torch.Tensor]:
    """Loss terms (already weighted) for whatever outputs a head produced; sum them for the loss.

    Computed in float32 with autocast off (probability BCE is not autocast-safe).
    """
    w = {**DEFAULT_LOSS_WEIGHTS, **(weights or {})}
    y, known = split_targets(targets)
    terms: dict[str, torch.Tensor] = {}
    device_type = y.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        if "leaf_logits" in outputs:
            yl = y.index_select(1, structure.leaf_idx)
            mass = yl.sum(dim=1, keepdim=True)
            keep = (mass > 0).squeeze(1)
            logp = torch.log_softmax(outputs["leaf_logits"].float(), dim=1)
            target = yl / mass.clamp_min(1.0)
            eps = float(w["leaf_smoothing"])
            if eps:  # label smoothing: eps of the mass spread evenly over all leaves
                target = (1.0 - eps) * target + eps / yl.shape[1]
            ce = -(target * logp).sum(dim=1)
            if known is not None:  # a row labeled only at an internal node: the mass of its leaves
                cand = 1.0 - known.index_select(1, structure.leaf_idx)  # [B, L] unknown leaves
                partial = ~keep & (cand.sum(dim=1) > 0)
                # finite fill (not -inf): rows without candidates must not give NaN gradients through where()
                marginal = -torch.logsumexp(logp + (cand - 1.0) * 1e4, dim=1)
                ce = torch.where(partial, marginal, ce)
                keep = keep | partial
            terms["leaf"] = w["leaf"] * (ce[keep].mean() if keep.any() else ce.sum() * 0.0)
        if "global_logits" in outputs and w["global"]:
            terms["global"] = w["global"] * F.binary_cross_entropy_with_logits(outputs["global_logits"].float(), y, weight=known)
        if "local_logits" in outputs and w["local"]:
            terms["local"] = w["local"] * F.binary_cross_entropy_with_logits(outputs["local_logits"].float(), y, weight=known)
        if "fused" in outputs:
            p = outputs["fused"].float()
            if w["fused"]:
                if max_constraint:  # C-HMCNN MCLoss
                    pos = structure.max_constraint(y * p)
                    neg = structure.max_constraint(p)
                    terms["fused"] = w["fused"] * _bce_prob(y * pos + (1.0 - y) * neg, y, known)
                else:
                    terms["fused"] = w["fused"] * _bce_prob(p, y, known)
            if w["violation"] and structure.edge_parent.numel():
                gap = torch.relu(p.index_select(1, structure.edge_child) - p.index_select(1, structure.edge_parent))
                terms["violation"] = w["violation"] * gap.pow(2).mean()
    return terms


# ---------------------------------------------------------------------------------------- heads
def _mlp(d_in: int, d_out: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(), nn.Dropout(dropout))


class _Head(nn.Module):
    """Common part: structure buffers, loss weights, ``loss``."""

    def __init__(self, spec: HierarchySpec, loss_weights: dict | None, max_constraint: bool):
        super().__init__()
        self.structure = _Structure(spec)
        self.wide: nn.Module | None = None
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.max_constraint = bool(max_constraint)

    @property
    def n_nodes(self) -> int:
        return self.structure.n_nodes

    def _init_wide(self, wide_dim: int, n_out: int) -> None:
        """A linear map from the encoders' raw outputs straight to the logits ("wide & deep"), zero at
        start. Sparse bag-of-n-gram features are learned best by a linear model on them (fastText):
        behind the fusion and the head's ReLU layers their signal comes out much weaker (leaf
        accuracy on real titles 0.27 vs 0.34 for the same bag, linear)."""
        if wide_dim:
            self.wide = nn.Linear(int(wide_dim), n_out)
            nn.init.zeros_(self.wide.weight)
            nn.init.zeros_(self.wide.bias)

    def _wide_logits(self, wide: torch.Tensor | None, extra: torch.Tensor | None = None) -> torch.Tensor | float:
        """The wide path's logits plus ``extra`` logits computed outside the head (e.g. the sparse
        TF-IDF linear model, :mod:`vtag.models.sparse_wide`)."""
        out = self.wide(wide) if self.wide is not None and wide is not None else 0.0
        return out + extra if extra is not None else out

    def loss_terms(self, outputs: dict, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return hierarchical_loss(outputs, targets, self.structure, self.loss_weights, self.max_constraint)

    def loss(self, outputs: dict, targets: torch.Tensor) -> torch.Tensor:
        return sum(self.loss_terms(outputs, targets).values())


class FlatHead(_Head):
    """Softmax over the leaves (baseline). ``x [B, D]`` -> ``leaf_logits [B, L]``, ``prob [B, N]``.

    ``hidden > 0`` adds one ReLU layer before the classifier. ``temperature`` other than 1 (a number,
    or ``"auto"``: 1 until :mod:`vtag.models.calibration` sets it after training) adds a
    ``temperature`` buffer that divides the logits (``leaf_logits`` are the divided ones).
    """

    def __init__(self, spec: HierarchySpec, in_dim: int, hidden: int = 0, dropout: float = 0.0,
                 loss_weights: dict | None = None, max_constraint: bool = False, wide_dim: int = 0,
                 temperature: float | str = 1.0, **_: object):
        super().__init__(spec, loss_weights, max_constraint=False)  # already consistent
        self.body = _mlp(in_dim, hidden, dropout) if hidden else nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden or in_dim, int(spec.leaves.size))
        self._init_wide(wide_dim, int(spec.leaves.size))
        start = (1.0 if temperature == "auto" else float(temperature)) if temperature_buffer(temperature) else None
        self.register_buffer("temperature", torch.tensor(start) if start is not None else None)

    def forward(self, x: torch.Tensor, wide: torch.Tensor | None = None,
                extra_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.body(x)) + self._wide_logits(wide, extra_logits)
        if self.temperature is not None:
            logits = logits / self.temperature
        with torch.autocast(device_type=x.device.type, enabled=False):  # sums of probabilities in fp32
            leaf_p = torch.softmax(logits.float(), dim=1)
            prob = (leaf_p @ self.structure.leaf_to_node).clamp(0.0, 1.0)
        return {"leaf_logits": logits, "prob": prob}


class DHMCNHead(_Head):
    """HMCN-F-style head; ``dense`` and ``cascade`` switch v1 -> v2 -> v3.

    Global flow: ``A_1 = φ(W_1 x)``; v1: ``A_h = φ(W_h [A_{h-1}; x])``; dense (v2/v3):
    ``A_h = φ(W_h [x; A_1; ...; A_{h-1}])``. Global output ``σ(W_G A_H)`` (v1) or ``σ(W_G [A_1..A_H])``
    (dense), ``[B, N]``. Local output of level h: ``σ(W_L^h φ(W_T^h A_h))`` over level h's nodes.
    Fused: ``β·P_L + (1-β)·P_G``; v3 then scales every node below level 1 by its level-1 ancestor's
    fused probability. Optional C-HMCNN max-constraint on the result.
    """

    def __init__(self, spec: HierarchySpec, in_dim: int, hidden: int = 256, local_hidden: int = 128,
                 dropout: float = 0.1, beta: float = 0.5, dense: bool = True, cascade: bool = False,
                 loss_weights: dict | None = None, max_constraint: bool = False, wide_dim: int = 0, **_: object):
        super().__init__(spec, loss_weights, max_constraint)
        self.dense, self.cascade, self.beta = bool(dense), bool(cascade), float(beta)
        n_levels = self.structure.n_levels
        self.flow = nn.ModuleList()
        for h in range(n_levels):
            if h == 0:
                d_in = in_dim
            else:
                d_in = in_dim + (h * hidden if self.dense else hidden)
            self.flow.append(_mlp(d_in, hidden, dropout))
        self.global_out = nn.Linear(hidden * (n_levels if self.dense else 1), self.structure.n_nodes)
        self.local = nn.ModuleList(
            nn.Sequential(_mlp(hidden, local_hidden, dropout), nn.Linear(local_hidden, size))
            for size in self.structure.level_sizes
        )
        self._init_prior_bias(spec)
        self._init_wide(wide_dim, self.structure.n_nodes)

    @torch.no_grad()
    def _init_prior_bias(self, spec: HierarchySpec) -> None:
        """Output biases start at the log-odds of a uniform prior within each level (``1 / n_h``), not
        at 0 (p = 0.5 for every node). With hundreds of nodes and a handful of positives per row, zero
        biases make the first steps a large "push everything down" phase that shrinks the hidden ReLU
        activations (many units die) and fills Adam's second moments with those large gradients; weak
        encoders (text / context embeddings) then stayed at chance for whole epochs (ablation text-only)."""
        sizes = np.asarray(self.structure.level_sizes, dtype=np.float64)
        node_prior = np.clip(1.0 / sizes[np.asarray(spec.level) - 1], 1e-4, 0.5)
        self.global_out.bias.copy_(torch.as_tensor(np.log(node_prior / (1.0 - node_prior)), dtype=torch.float32))
        for size, head in zip(sizes, self.local):
            p = min(max(1.0 / size, 1e-4), 0.5)
            head[-1].bias.fill_(math.log(p / (1.0 - p)))

    def forward(self, x: torch.Tensor, wide: torch.Tensor | None = None,
                extra_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        acts: list[torch.Tensor] = []
        for h, layer in enumerate(self.flow):
            if h == 0:
                inp = x
            elif self.dense:
                inp = torch.cat([x, *acts], dim=1)
            else:
                inp = torch.cat([acts[-1], x], dim=1)
            acts.append(layer(inp))
        wide_logits = self._wide_logits(wide, extra_logits)  # into both outputs: the fused score averages them
        global_logits = self.global_out(torch.cat(acts, dim=1) if self.dense else acts[-1]) + wide_logits
        local_logits = self.structure.scatter_levels([head(a) for head, a in zip(self.local, acts)]) + wide_logits
        fused = self.beta * torch.sigmoid(local_logits.float()) + (1.0 - self.beta) * torch.sigmoid(global_logits.float())
        if self.cascade:
            fused = self.structure.cascade(fused)
        prob = self.structure.max_constraint(fused) if self.max_constraint else fused
        return {"global_logits": global_logits, "local_logits": local_logits, "fused": fused, "prob": prob}


def _dhmcn(dense: bool, cascade: bool) -> Callable[..., DHMCNHead]:
    def build(spec: HierarchySpec, in_dim: int, **kw) -> DHMCNHead:
        return DHMCNHead(spec, in_dim, dense=dense, cascade=cascade, **kw)

    return build


HEADS: dict[str, Callable[..., nn.Module]] = {
    "flat": FlatHead,
    "dhmcn_v1": _dhmcn(dense=False, cascade=False),
    "dhmcn_v2": _dhmcn(dense=True, cascade=False),
    "dhmcn_v3": _dhmcn(dense=True, cascade=True),
}

_HEAD_KEYS = ("hidden", "local_hidden", "dropout", "beta", "max_constraint", "temperature")


def temperature_buffer(value) -> bool:
    """Whether ``head.temperature`` gives the head a ``temperature`` buffer: ``"auto"`` or a number
    other than 1 (1, the default, keeps the state dict of models built before the key). Raises
    ValueError on anything else."""
    if value == "auto":
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"head.temperature must be 'auto' or a number > 0, got {value!r}")
    return float(value) != 1.0


def create_head(cfg: dict, spec: HierarchySpec, in_dim: int, loss_weights: dict | None = None,
                wide_dim: int = 0) -> nn.Module:
    """A head from the ``head`` config section (``name`` + :data:`_HEAD_KEYS`) on ``[B, in_dim]``;
    ``wide_dim > 0``: plus a linear map from a ``[B, wide_dim]`` ``wide`` input to the logits
    (``forward(x, wide)``: flat's leaf logits, DHMCN's global and local logits)."""
    name = cfg["name"]
    if name not in HEADS:
        raise ValueError(f"head.name must be one of {sorted(HEADS)}, got {name!r}")
    kwargs = {k: cfg[k] for k in _HEAD_KEYS if cfg.get(k) is not None}
    if name != "flat" and temperature_buffer(kwargs.pop("temperature", 1.0)):
        raise ValueError(f"head.temperature needs head.name: flat (one softmax over the leaves), got {name!r}")
    if wide_dim:
        kwargs["wide_dim"] = int(wide_dim)
    return HEADS[name](spec, in_dim, loss_weights=loss_weights, **kwargs)
