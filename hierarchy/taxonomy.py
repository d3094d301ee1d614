"""The taxonomy: loading, validation, structure and version of a type-tag tree.

The file format is documented in ``docs/taxonomy-format.md``. A :class:`Taxonomy` is immutable once
built. Nodes are kept in a deterministic order — by level, then by id — and every array this module
returns is indexed in that order (``taxonomy.index[node_id]`` gives the position). The root is
implicit: it has no index and is never tagged; level-1 nodes have ``parent is None``.

Scale: loading and validation cost O(N·depth) time and memory (parent links, per-node paths and the
sparse :attr:`Taxonomy.closure_sparse`), so a 100k-node file loads in seconds. The dense ``[N, N]``
matrices (:meth:`Taxonomy.ancestor_matrix`, :attr:`Taxonomy.closure_matrix`,
:attr:`Taxonomy.exclusive_matrix`) are built only when a caller asks for them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vtag.hierarchy.nodes import Constraints, Node, TaxonomyError  # noqa: F401  (re-exported)
from vtag.hierarchy.sparse_rows import SparseRows  # noqa: F401  (re-exported)
from vtag.hierarchy.taxonomy_parse import _flatten, _parse_constraints, _resolve_levels

#: libyaml's safe loader where PyYAML was built with it (same documents, ~10x faster), else PyYAML's
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: close_ancestors gathers about this many set nodes at a time
_CLOSE_BLOCK = 1 << 20


class Taxonomy:
    """A validated taxonomy. Build with :meth:`load` or :meth:`from_dict`."""

    def __init__(
        self,
        nodes: Iterable[Node],
        constraints: Constraints,
        label: str = "",
        description: str = "",
        source: str = "<memory>",
    ):
        ordered = sorted(nodes, key=lambda n: (n.level, n.id))
        self.nodes: tuple[Node, ...] = tuple(ordered)
        self.ids: tuple[str, ...] = tuple(n.id for n in ordered)
        self.index: dict[str, int] = {nid: i for i, nid in enumerate(self.ids)}
        self.by_id: dict[str, Node] = {n.id: n for n in ordered}
        self.constraints = constraints
        self.label = label
        self.description = description
        self.source = source

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> Taxonomy:
        """Read and validate a taxonomy YAML file; raises :class:`TaxonomyError`."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise TaxonomyError(str(path), None, f"cannot read file: {exc}") from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise TaxonomyError(
                str(path),
                None,
                f"not UTF-8: byte offset {exc.start} (line {line}) holds 0x{raw[exc.start]:02x}, which is "
                f"not valid UTF-8 ({exc.reason}); a taxonomy file must be UTF-8 — re-encode it, e.g. "
                f"`iconv -f GBK -t UTF-8`",
            ) from None
        try:
            data = yaml.load(text, Loader=_YAML_LOADER)
        except yaml.YAMLError as exc:
            raise TaxonomyError(str(path), None, f"not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> Taxonomy:
        """Build from the parsed YAML structure (nested ``children`` or flat ``parent`` form)."""
        if not isinstance(data, dict) or "nodes" not in data:
            raise TaxonomyError(source, None, "top level must be a mapping with a 'nodes' list")
        raw_nodes = data["nodes"]
        if not isinstance(raw_nodes, list) or not raw_nodes:
            raise TaxonomyError(source, None, "'nodes' must be a non-empty list")
        flat = _flatten(raw_nodes, source)
        nodes = _resolve_levels(flat, source)
        constraints = _parse_constraints(data.get("constraints") or {}, source)
        tax = cls(
            nodes,
            constraints,
            label=str(data.get("label") or ""),
            description=str(data.get("description") or ""),
            source=source,
        )
        tax._validate()
        return tax

    def to_dict(self) -> dict:
        """The nested YAML structure; ``from_dict(to_dict())`` gives the same version."""

        def emit(node: Node) -> dict:
            out: dict[str, Any] = {"id": node.id, "name": node.name}
            if node.name_en:
                out["name_en"] = node.name_en
            if node.source:
                out["source"] = node.source
            if node.replaces:
                out["replaces"] = list(node.replaces)
            if node.children:
                out["children"] = [emit(self.by_id[c]) for c in node.children]
            return out

        c = self.constraints
        exclusive: list[Any] = []
        for name, group in zip(c.exclusive_names, c.exclusive):
            exclusive.append({"name": name, "ids": list(group)} if name else list(group))
        return {
            "label": self.label,
            "description": self.description,
            "version": self.version,
            "nodes": [emit(n) for n in self.nodes if n.parent is None],
            "constraints": {
                "exclusive": exclusive,
                "requires": {k: list(v) for k, v in sorted(c.requires.items())},
                "cooccur": [[a, b, s] for a, b, s in c.cooccur],
            },
        }

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(
            yaml.safe_dump(self.to_dict(), allow_unicode=True, sort_keys=False), encoding="utf-8"
        )

    # ------------------------------------------------------------------ identity
    @cached_property
    def version(self) -> str:
        """Content hash over (id, parent, name) and the constraints; see docs/taxonomy-format.md."""
        c = self.constraints
        payload = {
            "nodes": sorted([n.id, n.parent or "", n.name] for n in self.nodes),
            "exclusive": sorted(list(g) for g in c.exclusive),
            "requires": {k: sorted(v) for k, v in sorted(c.requires.items())},
            "cooccur": sorted([a, b, round(float(s), 6)] for a, b, s in c.cooccur),
        }
        blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"Taxonomy(label={self.label!r}, version={self.version}, nodes={len(self.nodes)}, "
            f"leaves={len(self.leaf_ids)}, max_depth={self.max_depth})"
        )

    # ------------------------------------------------------------------ structure
    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.by_id

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    def node(self, node_id: str) -> Node:
        try:
            return self.by_id[node_id]
        except KeyError:
            raise KeyError(f"unknown node id {node_id!r} in taxonomy {self.label or self.source}") from None

    def children(self, node_id: str | None) -> tuple[str, ...]:
        """Children ids of a node (of the implicit root for ``None``), in file order."""
        if node_id is None:
            return tuple(n.id for n in self.nodes if n.parent is None)
        return self.node(node_id).children

    def path(self, node_id: str) -> list[str]:
        """Ids from level 1 down to ``node_id`` inclusive."""
        out = []
        cur: str | None = node_id
        while cur is not None:
            out.append(cur)
            cur = self.node(cur).parent
        return out[::-1]

    def path_names(self, node_id: str) -> list[str]:
        return [self.by_id[i].name for i in self.path(node_id)]

    def ancestors(self, node_id: str) -> list[str]:
        """Proper ancestors, nearest first (the implicit root excluded)."""
        return self.path(node_id)[-2::-1]

    def descendants(self, node_id: str) -> list[str]:
        out, stack = [], list(self.node(node_id).children)
        while stack:
            cur = stack.pop()
            out.append(cur)
            stack.extend(self.by_id[cur].children)
        return sorted(out, key=lambda i: self.index[i])

    @cached_property
    def parent_index(self) -> np.ndarray:
        """``[n_nodes]`` int64: index of each node's parent, -1 for level-1 nodes."""
        return np.array([self.index[n.parent] if n.parent else -1 for n in self.nodes], dtype=np.int64)

    @cached_property
    def levels(self) -> np.ndarray:
        """``[n_nodes]`` int64: level of each node (1 = top)."""
        return np.array([n.level for n in self.nodes], dtype=np.int64)

    @cached_property
    def is_leaf(self) -> np.ndarray:
        """``[n_nodes]`` bool."""
        return np.array([n.is_leaf for n in self.nodes], dtype=bool)

    @cached_property
    def leaf_indices(self) -> np.ndarray:
        """``[n_leaves]`` int64: node indices of the leaves, in node order."""
        return np.flatnonzero(self.is_leaf).astype(np.int64)

    @cached_property
    def leaf_ids(self) -> tuple[str, ...]:
        return tuple(self.ids[i] for i in self.leaf_indices)

    @cached_property
    def max_depth(self) -> int:
        return int(self.levels.max())

    def level_indices(self, level: int) -> np.ndarray:
        """Node indices at ``level`` (1-based)."""
        return np.flatnonzero(self.levels == level).astype(np.int64)

    @cached_property
    def leaves_per_level(self) -> dict[int, int]:
        lv = self.levels[self.is_leaf]
        return {int(k): int((lv == k).sum()) for k in range(1, self.max_depth + 1) if (lv == k).any()}

    @cached_property
    def path_matrix(self) -> np.ndarray:
        """``[n_nodes, max_depth]`` int64: row i is node i's path as indices, padded with -1."""
        out = np.full((self.n_nodes, self.max_depth), -1, dtype=np.int64)
        parent = self.parent_index
        # Nodes are ordered by level, so a level is one block and its parents' rows are done.
        for h in range(1, self.max_depth + 1):
            idx = self.level_indices(h)
            if h > 1:
                out[idx, : h - 1] = out[parent[idx], : h - 1]
            out[idx, h - 1] = idx
        return out

    @cached_property
    def leaf_counts(self) -> np.ndarray:
        """``[n_nodes]`` int64: the number of leaves at or below each node (1 for a leaf)."""
        paths = self.path_matrix[self.leaf_indices]
        return np.bincount(paths[paths >= 0], minlength=self.n_nodes).astype(np.int64)

    def ancestor_matrix(self) -> np.ndarray:
        """C-HMCNN's ``R``: ``[n_nodes, n_nodes]`` bool, ``R[i, j]`` iff j is i or a descendant of i.

        So ``max_j R[i, j] * p[j]`` is the max-constraint output of class i, and a label vector
        ``y [n]`` is ancestor-closed by ``(R.astype(int) @ y) > 0``. A new dense array on each call
        (N² bytes: build it only where a model needs it; :meth:`close_ancestors` does not).
        """
        n = self.n_nodes
        r = np.zeros((n, n), dtype=bool)
        pm = self.path_matrix
        cols = np.broadcast_to(np.arange(n)[:, None], pm.shape)
        valid = pm >= 0
        r[pm[valid], cols[valid]] = True
        return r

    def close_ancestors(self, labels: np.ndarray) -> np.ndarray:
        """``[batch, n_nodes]`` bool -> the same with every ancestor of a set node set too.

        Path-based: each set node sets its path (``path_matrix`` row), O(set nodes · depth) beyond
        reading the input; no ``[N, N]`` matrix. A 1-D ``[n_nodes]`` vector works too.
        """
        labels = np.asarray(labels, dtype=bool)
        n = self.n_nodes
        if labels.ndim not in (1, 2) or labels.shape[-1] != n:
            raise ValueError(f"labels must have shape [batch, {n}] (one column per node), got {labels.shape}")
        flat = labels.reshape(-1, n)
        out = np.zeros(flat.shape, dtype=bool)
        pm = self.path_matrix
        # rows in blocks of about _CLOSE_BLOCK set nodes, so the [set nodes, depth] gather stays small
        cum = np.cumsum(np.count_nonzero(flat, axis=1))
        total = int(cum[-1]) if cum.size else 0
        cuts = np.searchsorted(cum, np.arange(_CLOSE_BLOCK, total, _CLOSE_BLOCK)) + 1
        bounds = np.unique(np.concatenate([[0], cuts, [flat.shape[0]]]))
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            rows, cols = np.nonzero(flat[lo:hi])
            anc = pm[cols]  # [k, depth]
            valid = anc >= 0
            out[lo + np.broadcast_to(rows[:, None], anc.shape)[valid], anc[valid]] = True
        return out.reshape(labels.shape)

    # ------------------------------------------------------------------ constraints
    @cached_property
    def closure_sparse(self) -> SparseRows:
        """What tagging each node implies, sparse: row i holds (ascending) i, its ancestors, what it
        requires (transitively) and their ancestors. The rows of :attr:`closure_matrix`.

        A node whose path holds no node with a ``requires`` rule implies exactly its path; the others
        get a search over parent links and rules. O(N·depth) for the usual few rules.
        """
        n, pm = self.n_nodes, self.path_matrix
        req = {self.index[a]: [self.index[b] for b in bs] for a, bs in self.constraints.requires.items() if bs}
        lengths = self.levels.copy()
        extra: dict[int, np.ndarray] = {}
        if req:
            has_rule = np.zeros(n, dtype=bool)
            has_rule[list(req)] = True
            affected = (has_rule[np.where(pm >= 0, pm, 0)] & (pm >= 0)).any(axis=1)
            for i in np.flatnonzero(affected).tolist():
                seen: set[int] = set()
                stack = [i]
                while stack:
                    x = stack.pop()
                    if x in seen:
                        continue
                    for a in pm[x][pm[x] >= 0].tolist():
                        if a not in seen:
                            seen.add(a)
                            stack.extend(req.get(a, ()))
                extra[i] = np.array(sorted(seen), dtype=np.int64)
                lengths[i] = len(seen)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = np.empty(int(indptr[-1]), dtype=np.int64)
        plain = np.ones(n, dtype=bool)
        plain[list(extra)] = False
        rows = pm[plain]
        pos = indptr[:-1][plain][:, None] + np.arange(self.max_depth)[None, :]
        valid = rows >= 0  # a path fills the first `level` slots of its row
        indices[pos[valid]] = rows[valid]
        for i, implied in extra.items():
            indices[indptr[i] : indptr[i + 1]] = implied
        return SparseRows(indptr, indices, n)

    @cached_property
    def closure_matrix(self) -> np.ndarray:
        """``[n_nodes, n_nodes]`` bool: row i is what tagging i implies — i, its ancestors, what it
        requires (transitively) and their ancestors. Dense (N² bytes), built on first use from
        :attr:`closure_sparse`."""
        return self.closure_sparse.dense()

    @cached_property
    def exclusive_sparse(self) -> SparseRows:
        """Row i: the nodes (ascending) that share an exclusive group with i, i itself excluded."""
        partners: dict[int, set[int]] = {}
        for group in self.constraints.exclusive:
            idx = [self.index[g] for g in group]
            for a in idx:
                partners.setdefault(a, set()).update(b for b in idx if b != a)
        return SparseRows.from_rows({i: sorted(p) for i, p in partners.items()}, self.n_nodes, self.n_nodes)

    @cached_property
    def exclusive_matrix(self) -> np.ndarray:
        """``[n_nodes, n_nodes]`` bool: i and j (i != j) share an exclusive group. Dense, built on
        first use from :attr:`exclusive_sparse`."""
        return self.exclusive_sparse.dense()

    def _validate(self) -> None:
        src = self.source
        c = self.constraints
        present = np.zeros(self.max_depth + 1, dtype=bool)
        present[self.levels] = True
        for lvl in range(1, self.max_depth + 1):
            if not present[lvl]:
                raise TaxonomyError(src, None, f"level {lvl} is empty")
        for group, name in zip(c.exclusive, c.exclusive_names):
            for g in group:
                if g not in self.by_id:
                    raise TaxonomyError(src, g, f"unknown id in exclusive group {name or list(group)}")
            if len(set(group)) < 2:
                raise TaxonomyError(src, group[0], "an exclusive group needs at least two distinct ids")
            for g in group:
                for a in self.ancestors(g):
                    if a in group:
                        raise TaxonomyError(src, g, f"exclusive with its own ancestor {a!r}")
        for a, bs in c.requires.items():
            if a not in self.by_id:
                raise TaxonomyError(src, a, "unknown id in requires")
            for b in bs:
                if b not in self.by_id:
                    raise TaxonomyError(src, b, f"unknown id in requires of {a!r}")
                if b == a:
                    raise TaxonomyError(src, a, "requires itself")
        for a, b, s in c.cooccur:
            for x in (a, b):
                if x not in self.by_id:
                    raise TaxonomyError(src, x, "unknown id in cooccur")
            if not (0.0 < s <= 1.0):
                raise TaxonomyError(src, a, f"cooccur strength {s} with {b!r} is outside (0, 1]")
        # A node whose implied set breaks an exclusive group can never be tagged consistently.
        i, clash = self._first_contradiction()
        if i >= 0:
            implied = [self.ids[j] for j in self.closure_sparse.row(i)]
            raise TaxonomyError(
                src,
                self.ids[i],
                f"constraint contradicts the hierarchy: tagging it implies {implied}, of which "
                f"{[self.ids[j] for j in clash]} share an exclusive group",
            )

    def _first_contradiction(self) -> tuple[int, list[int]]:
        """(lowest node index whose closure holds two members of one exclusive group, those members
        in index order), or (-1, []). Sparse: one pass over the closure entries that are members."""
        groups = self.constraints.exclusive
        if not groups:
            return -1, []
        n, clo = self.n_nodes, self.closure_sparse
        member_groups: dict[int, list[int]] = {}
        for g, group in enumerate(groups):
            for m in group:
                member_groups.setdefault(self.index[m], []).append(g)
        mem = SparseRows.from_rows(member_groups, n, len(groups))  # node -> its groups
        n_groups = np.diff(mem.indptr)
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(clo.indptr))
        cols = clo.indices
        hit = n_groups[cols] > 0
        rows, cols = rows[hit], cols[hit]
        reps = n_groups[cols]
        starts = np.repeat(mem.indptr[cols] - np.cumsum(reps) + reps, reps)
        grp = mem.indices[starts + np.arange(int(reps.sum()))]
        key = np.repeat(rows, reps) * len(groups) + grp
        uniq, counts = np.unique(key, return_counts=True)
        bad = uniq[counts >= 2]
        if not bad.size:
            return -1, []
        i = int(bad.min() // len(groups))
        bad_groups = {int(k % len(groups)) for k in bad if k // len(groups) == i}
        clash = [j for j in clo.row(i).tolist() if bad_groups & set(member_groups.get(j, ()))]
        return i, clash

