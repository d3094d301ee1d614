"""Bringing an already-decoded label set from one taxonomy version to the next, without the model.

The re-tag job asks :class:`TagRemapper` about every stored row. A row is **remappable** when

1. every node id among its tags has the migration action ``keep``, ``rename`` or ``move``
   (:func:`vtag.hierarchy.diff.migration_map`; such ids exist unchanged in the new version), and
2. its primary leaf is still a leaf, and
3. the label set rebuilt in the new version (below) breaks no ``exclusive`` group of the new version.

Otherwise it needs **re-inference** (a tag was split, merged or removed, a leaf gained children,
or a new constraint now forbids the combination), and ``remap`` says why.

Rebuilding: the row's *frontier* — the tags that are no ancestor of another tag in the old version
— is kept, and everything it implies in the new version is added (new ancestors after a move, new
``requires``). Old ancestors that no longer lie above a frontier tag are dropped. A kept tag keeps
its score; an implied tag gets the highest score of the frontier tags that imply it, so a parent
still scores at least its children.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from vtag.hierarchy.taxonomy import Taxonomy

REMAP_ACTIONS = frozenset({"keep", "rename", "move"})


@dataclass(frozen=True)
class RemappedRow:
    """A row in the new version: primary leaf, its path, and all labels ``(node_id, score)``."""

    leaf_id: str
    path: list[str]
    path_names: list[str]
    score: float
    tags: list[dict]


class TagRemapper:
    """Remaps stored rows from ``old`` to ``new`` by the migration map (see module docstring)."""

    def __init__(self, old: Taxonomy, new: Taxonomy, migration: dict | None = None):
        from vtag.hierarchy.diff import migration_map

        self.old, self.new = old, new
        self.migration = migration if migration is not None else migration_map(old, new)
        self.action = {k: m.action for k, m in self.migration.items()}

    def row_action(self, tag_ids: Sequence[str]) -> str:
        """``remap`` or ``reinfer`` judged on the ids alone (what ``vtag retag plan`` counts)."""
        for t in tag_ids:
            if self.action.get(t) not in REMAP_ACTIONS:
                return "reinfer"
        return "remap"

    def remap(self, leaf_id: str, tags: Sequence[tuple[str, float]]) -> tuple[RemappedRow | None, str]:
        """(the row in the new version, "") or (None, why it needs re-inference)."""
        old, new = self.old, self.new
        ids = [t for t, _ in tags]
        for t in list(ids) + [leaf_id]:
            act = self.action.get(t)
            if act not in REMAP_ACTIONS:
                return None, f"{t}: {act or 'unknown id'}"
        if leaf_id not in new or not new.by_id[leaf_id].is_leaf:
            return None, f"{leaf_id}: no longer a leaf"
        scores = dict(tags)
        scores.setdefault(leaf_id, max(scores.values(), default=0.0))
        ancestors_of_tags = {a for t in scores for a in old.ancestors(t)}
        frontier = [t for t in scores if t not in ancestors_of_tags]
        labels: dict[str, float] = {}
        for f in frontier:
            for j in new.closure_sparse.row(new.index[f]).tolist():
                nid = new.ids[j]
                labels[nid] = max(labels.get(nid, 0.0), scores[f])
        for nid in labels:
            if nid in scores:
                labels[nid] = max(labels[nid], scores[nid])
        clash = _first_exclusive_pair(new, list(labels))
        if clash:
            a, b = clash
            return None, f"{a} and {b} are exclusive in {new.label or 'the new version'}"
        tag_rows = sorted(
            (
                {"node_id": n, "name": new.by_id[n].name, "level": new.by_id[n].level, "score": float(s)}
                for n, s in labels.items()
            ),
            key=lambda d: (d["level"], -d["score"], d["node_id"]),
        )
        row = RemappedRow(
            leaf_id=leaf_id,
            path=new.path(leaf_id),
            path_names=new.path_names(leaf_id),
            score=float(labels[leaf_id]),
            tags=tag_rows,
        )
        return row, ""


def _first_exclusive_pair(taxonomy: Taxonomy, ids: list[str]) -> tuple[str, str] | None:
    """The first pair of ``ids`` (in list order: first by the earlier member, then by the later
    one's position) that shares an exclusive group of ``taxonomy``, or None."""
    where = {taxonomy.index[n]: k for k, n in enumerate(ids)}
    partners = taxonomy.exclusive_sparse
    for nid in ids:
        hits = [where[j] for j in partners.row(taxonomy.index[nid]).tolist() if j in where]
        if hits:
            return nid, ids[min(hits)]
    return None
