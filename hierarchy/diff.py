"""Differences between two taxonomy versions, and what each old node id becomes.

:func:`diff` compares nodes by id:

- ``renamed``: the id is in both versions with another display ``name``;
- ``moved``: the id is in both versions under another parent (a node can be renamed *and* moved:
  it is then in both lists);
- ``split`` / ``merged``: declared by the new file — a new node with ``replaces: [old ids]`` takes
  over those old nodes. An old id named by several new nodes is a **split** (if the old id itself
  survives, it counts as one of the parts); a new node that takes over several old ids is a
  **merge** (if the new node's own id existed before, it counts as one of the merged ids). A node
  that replaces exactly one old id that nobody else replaces and that is gone from the new
  version (a 1 -> 1 ``replaces``: a new id for the same concept) is reported as a **merge of one**.
  A ``replaces`` entry that the node already carried in the old version is history and ignored;
  any other entry must name an id of the old version.
- ``added``: new ids that replace nothing; ``removed``: old ids that are gone and that no new node
  replaces.

Constraint changes (``exclusive``, ``requires``, ``cooccur``) are not listed; they change the
version hash all the same.

:func:`migration_map` gives every old node id a :class:`Migration` for the re-tag job, by the
first rule that applies:

1. ``reinfer`` — the id is gone (removed: ``new_ids`` empty; split or merged away: ``new_ids``
   are its replacements), or it survives but part of it was split off (``new_ids``: itself and the
   parts), or it was a **leaf that gained children**: a row whose primary leaf it was must now go
   one level deeper, which only the model can decide.
2. ``move`` — the same id, but its parent or any ancestor differs (the stored ``path`` changes):
   remap without inference.
3. ``rename`` — the same path of ids, but its name or an ancestor's name differs (the stored
   ``path_names``/``level1..5`` change): remap without inference.
4. ``keep`` — same id, parent, path and names.

The actions count old **ids**, descendants included, while :func:`diff` lists the nodes that
changed themselves: a node under a renamed node is a ``rename`` too (its stored ``path_names``
change) without being in ``renamed``. Each :class:`Migration` therefore carries a ``cause`` (one of
:data:`CAUSES`), and :func:`migration_breakdown` splits each action's count by cause, so a summary
can say ``rename 13: 7 renamed, 6 under a renamed ancestor`` beside ``renamed (7)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from vtag.hierarchy.taxonomy import Taxonomy

Action = Literal["keep", "rename", "move", "reinfer"]

#: cause code -> how a summary says it, per action, in display order
CAUSES: dict[str, dict[str, str]] = {
    "keep": {"unchanged": "unchanged"},
    "rename": {"renamed": "renamed", "ancestor_renamed": "under a renamed ancestor"},
    "move": {"moved": "moved", "moved_renamed": "moved and renamed", "ancestor_moved": "under a moved ancestor"},
    "reinfer": {"removed": "removed", "split": "split up", "merged": "merged away", "partly_split": "partly split off",
                "gained_children": "leaves that gained children"},
}


@dataclass(frozen=True)
class Added:
    id: str
    name: str
    parent: str | None


@dataclass(frozen=True)
class Removed:
    id: str
    name: str
    parent: str | None


@dataclass(frozen=True)
class Renamed:
    id: str
    old_name: str
    new_name: str


@dataclass(frozen=True)
class Moved:
    id: str
    name: str
    old_parent: str | None
    new_parent: str | None


@dataclass(frozen=True)
class Split:
    old_id: str
    old_name: str
    new_ids: tuple[str, ...]
    new_names: tuple[str, ...]


@dataclass(frozen=True)
class Merged:
    new_id: str
    new_name: str
    old_ids: tuple[str, ...]
    old_names: tuple[str, ...]


@dataclass(frozen=True)
class TaxonomyDiff:
    """The changes from ``old`` to ``new``; each list is sorted by its (first) id."""

    added: tuple[Added, ...] = ()
    removed: tuple[Removed, ...] = ()
    renamed: tuple[Renamed, ...] = ()
    moved: tuple[Moved, ...] = ()
    split: tuple[Split, ...] = ()
    merged: tuple[Merged, ...] = ()

    KINDS = ("added", "removed", "renamed", "moved", "split", "merged")

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self, k) for k in self.KINDS)

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in self.KINDS}

    def to_dict(self) -> dict[str, list[dict]]:
        """``{kind: [entry, ...]}`` with JSON-ready entries (tuples become lists)."""

        def plain(entry) -> dict:
            return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(entry).items()}

        return {k: [plain(e) for e in getattr(self, k)] for k in self.KINDS}


@dataclass(frozen=True)
class Migration:
    """What an old node id becomes: ``action`` (keep, rename, move, reinfer), the new id(s) — the
    same id for keep/rename/move, the replacements (possibly none) for reinfer — and why."""

    action: Action
    new_ids: tuple[str, ...]
    reason: str = ""
    cause: str = ""  # a key of CAUSES[action]: what changed, the node itself or an ancestor


# ---------------------------------------------------------------------- replaces
def _replacements(old: Taxonomy, new: Taxonomy) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """-> (effective ``replaces`` of each new node that has any, old id -> new ids replacing it).

    Raises ``ValueError`` for a ``replaces`` entry that names no old node or the node itself."""
    takes: dict[str, tuple[str, ...]] = {}
    by_old: dict[str, list[str]] = {}
    for node in new.nodes:
        carried = set(old.by_id[node.id].replaces) if node.id in old else set()
        eff = tuple(o for o in node.replaces if o not in carried)
        for o in eff:
            if o == node.id:
                raise ValueError(f"{new.source}: node {node.id!r}: replaces itself")
            if o not in old:
                raise ValueError(
                    f"{new.source}: node {node.id!r}: replaces {o!r}, which is not in the old "
                    f"version {old.label or old.source}"
                )
            by_old.setdefault(o, []).append(node.id)
        if eff:
            takes[node.id] = eff
    return takes, {o: tuple(ns) for o, ns in by_old.items()}


def _split_parts(old_id: str, by_old: dict[str, tuple[str, ...]], new: Taxonomy) -> tuple[str, ...]:
    """The new ids an old id went to (itself included when it survives), in new node order."""
    parts = set(by_old.get(old_id, ()))
    if parts and old_id in new:
        parts.add(old_id)
    return tuple(sorted(parts, key=new.index.__getitem__))


# ---------------------------------------------------------------------- diff
def diff(old: Taxonomy, new: Taxonomy) -> TaxonomyDiff:
    """The node changes from ``old`` to ``new`` (see the module docstring)."""
    takes, by_old = _replacements(old, new)
    added = [Added(n.id, n.name, n.parent) for n in new.nodes if n.id not in old and n.id not in takes]
    removed = [Removed(o.id, o.name, o.parent) for o in old.nodes if o.id not in new and o.id not in by_old]
    renamed, moved = [], []
    for o in old.nodes:
        if o.id not in new:
            continue
        n = new.by_id[o.id]
        if n.name != o.name:
            renamed.append(Renamed(o.id, o.name, n.name))
        if n.parent != o.parent:
            moved.append(Moved(o.id, n.name, o.parent, n.parent))
    split = []
    for o in by_old:
        parts = _split_parts(o, by_old, new)
        if len(parts) >= 2:
            split.append(Split(o, old.by_id[o].name, parts, tuple(new.by_id[p].name for p in parts)))
    merged = []
    for nid, eff in takes.items():
        sources = tuple(sorted(set(eff) | ({nid} if nid in old else set()), key=old.index.__getitem__))
        one_to_one = len(sources) == 1 and _split_parts(sources[0], by_old, new) == (nid,)
        if len(sources) >= 2 or one_to_one:
            merged.append(Merged(nid, new.by_id[nid].name, sources,
                                 tuple(old.by_id[s].name for s in sources)))
    return TaxonomyDiff(
        added=tuple(sorted(added, key=lambda e: e.id)),
        removed=tuple(sorted(removed, key=lambda e: e.id)),
        renamed=tuple(sorted(renamed, key=lambda e: e.id)),
        moved=tuple(sorted(moved, key=lambda e: e.id)),
        split=tuple(sorted(split, key=lambda e: e.old_id)),
        merged=tuple(sorted(merged, key=lambda e: e.new_id)),
    )


# ---------------------------------------------------------------------- migration
def migration_map(old: Taxonomy, new: Taxonomy) -> dict[str, Migration]:
    """``{old_id: Migration}`` for every node of ``old``, in ``old`` node order (see the module
    docstring for the rules)."""
    _, by_old = _replacements(old, new)
    out: dict[str, Migration] = {}
    for o in old.nodes:
        out[o.id] = _migrate(o.id, old, new, by_old)
    return out


def _migrate(oid: str, old: Taxonomy, new: Taxonomy, by_old: dict[str, tuple[str, ...]]) -> Migration:
    repl = by_old.get(oid, ())
    if oid not in new:
        if not repl:
            return Migration("reinfer", (), "removed", "removed")
        parts = _split_parts(oid, by_old, new)
        how = "split" if len(parts) > 1 else "merged"
        return Migration("reinfer", parts, f"{how} into {', '.join(parts)}", how)
    if repl:
        parts = _split_parts(oid, by_old, new)
        return Migration("reinfer", parts, f"split: part of it now in {', '.join(p for p in parts if p != oid)}",
                         "partly_split")
    o, n = old.by_id[oid], new.by_id[oid]
    if o.is_leaf and not n.is_leaf:
        return Migration("reinfer", (oid,), f"a leaf that gained children ({', '.join(n.children)})",
                         "gained_children")
    old_path, new_path = old.path(oid), new.path(oid)
    if old_path != new_path:
        if o.parent != n.parent:
            why = f"parent {o.parent or '(root)'} -> {n.parent or '(root)'}"
            return Migration("move", (oid,), why, "moved_renamed" if o.name != n.name else "moved")
        why = f"an ancestor moved: {'/'.join(old_path)} -> {'/'.join(new_path)}"
        return Migration("move", (oid,), why, "ancestor_moved")
    old_names, new_names = old.path_names(oid), new.path_names(oid)
    if old_names != new_names:
        if o.name != n.name:
            return Migration("rename", (oid,), f"name {o.name} -> {n.name}", "renamed")
        why = f"an ancestor renamed: {'/'.join(old_names)} -> {'/'.join(new_names)}"
        return Migration("rename", (oid,), why, "ancestor_renamed")
    return Migration("keep", (oid,), "", "unchanged")


def migration_counts(migration: dict[str, Migration]) -> dict[str, int]:
    """``{action: count}`` over the four actions (zeros included)."""
    counts = {a: 0 for a in ("keep", "rename", "move", "reinfer")}
    for m in migration.values():
        counts[m.action] += 1
    return counts


def migration_breakdown(migration: dict[str, Migration]) -> dict[str, dict[str, int]]:
    """``{action: {cause: count}}`` (causes with a zero count left out, :data:`CAUSES` order): how
    each action's count of :func:`migration_counts` splits between nodes that changed themselves
    and nodes under a changed ancestor.

    Parameters
    ----------
    migration
        The :func:`migration_map` of two versions.
    """
    raw: dict[str, dict[str, int]] = {a: {} for a in CAUSES}
    for m in migration.values():
        raw[m.action][m.cause] = raw[m.action].get(m.cause, 0) + 1
    return {a: {c: raw[a][c] for c in CAUSES[a] if raw[a].get(c)} for a in CAUSES}


__all__ = [
    "Added", "Removed", "Renamed", "Moved", "Split", "Merged", "TaxonomyDiff", "Migration",
    "CAUSES", "diff", "migration_map", "migration_counts", "migration_breakdown",
]
