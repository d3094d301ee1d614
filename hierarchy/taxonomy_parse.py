"""Parsing a taxonomy document's ``nodes`` (nested or flat) and ``constraints`` into checked
:class:`~vtag.hierarchy.nodes.Node` and :class:`~vtag.hierarchy.nodes.Constraints` values (the format:
``docs/taxonomy-format.md``); :class:`~vtag.hierarchy.taxonomy.Taxonomy` validates the whole."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vtag.hierarchy.nodes import Constraints, Node, TaxonomyError

_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")

@dataclass
class _RawNode:
    id: str
    name: str
    parent: str | None
    name_en: str | None
    source: str | None
    replaces: tuple[str, ...]
    order: int
    children: list[str] = field(default_factory=list)


def _flatten(raw_nodes: list, source: str) -> dict[str, _RawNode]:
    out: dict[str, _RawNode] = {}
    counter = 0

    def visit(item: Any, parent: str | None, nested: bool) -> None:
        nonlocal counter
        if not isinstance(item, dict):
            raise TaxonomyError(source, parent, f"a node must be a mapping, got {type(item).__name__}")
        nid = item.get("id")
        if nid is None:
            raise TaxonomyError(source, parent, "a node without 'id'" + (f" under {parent!r}" if parent else ""))
        nid = str(nid)
        if not _ID_RE.match(nid):
            raise TaxonomyError(source, nid, "id must match [A-Za-z0-9_.-]+")
        if nid in out:
            raise TaxonomyError(source, nid, "duplicate id")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise TaxonomyError(source, nid, "missing or empty 'name'")
        if not nested:
            p = item.get("parent")
            parent = None if p is None else str(p)
        rep = item.get("replaces") or []
        if not isinstance(rep, list):
            raise TaxonomyError(source, nid, "'replaces' must be a list of ids")
        out[nid] = _RawNode(
            id=nid,
            name=name.strip(),
            parent=parent,
            name_en=item.get("name_en"),
            source=item.get("source"),
            replaces=tuple(str(r) for r in rep),
            order=counter,
        )
        counter += 1
        kids = item.get("children") or []
        if not isinstance(kids, list):
            raise TaxonomyError(source, nid, "'children' must be a list")
        for kid in kids:
            visit(kid, nid, True)

    nested_form = any(isinstance(n, dict) and n.get("children") for n in raw_nodes)
    for item in raw_nodes:
        visit(item, None, nested_form)
    for rn in out.values():
        if rn.parent is not None:
            if rn.parent not in out:
                raise TaxonomyError(source, rn.id, f"unknown parent {rn.parent!r}")
    for rn in sorted(out.values(), key=lambda r: r.order):
        if rn.parent is not None:
            out[rn.parent].children.append(rn.id)
    return out


def _resolve_levels(flat: dict[str, _RawNode], source: str) -> list[Node]:
    levels: dict[str, int] = {}
    for nid in flat:
        chain = []
        cur: str | None = nid
        seen: set[str] = set()
        while cur is not None and cur not in levels:
            if cur in seen:
                raise TaxonomyError(source, cur, "cycle: the node is its own ancestor via " + " -> ".join(chain))
            seen.add(cur)
            chain.append(cur)
            cur = flat[cur].parent
        base = 0 if cur is None else levels[cur]
        for depth, c in enumerate(reversed(chain), start=1):
            levels[c] = base + depth
    nodes = []
    for rn in flat.values():
        nodes.append(
            Node(
                id=rn.id,
                name=rn.name,
                parent=rn.parent,
                level=levels[rn.id],
                children=tuple(rn.children),
                name_en=rn.name_en,
                source=rn.source,
                replaces=rn.replaces,
            )
        )
    return nodes


def _parse_constraints(raw: Any, source: str) -> Constraints:
    if not isinstance(raw, dict):
        raise TaxonomyError(source, None, "'constraints' must be a mapping")
    exclusive: list[tuple[str, ...]] = []
    names: list[str | None] = []
    for g in raw.get("exclusive") or []:
        if isinstance(g, dict):
            ids, name = g.get("ids") or [], g.get("name")
        else:
            ids, name = g, None
        if not isinstance(ids, list):
            raise TaxonomyError(source, None, f"exclusive group {g!r} must be a list of ids")
        exclusive.append(tuple(sorted({str(i) for i in ids})) if ids else ())
        names.append(str(name) if name else None)
        if not ids:
            raise TaxonomyError(source, None, f"exclusive group {name or g!r} is empty")
    requires: dict[str, tuple[str, ...]] = {}
    req_raw = raw.get("requires") or {}
    if not isinstance(req_raw, dict):
        raise TaxonomyError(source, None, "'requires' must map an id to a list of ids")
    for a, bs in req_raw.items():
        if isinstance(bs, (str, int)):
            bs = [bs]
        requires[str(a)] = tuple(sorted({str(b) for b in bs}))
    cooccur: list[tuple[str, str, float]] = []
    for item in raw.get("cooccur") or []:
        if isinstance(item, dict):
            a, b, s = item.get("a"), item.get("b"), item.get("strength")
        elif isinstance(item, list) and len(item) == 3:
            a, b, s = item
        else:
            raise TaxonomyError(source, None, f"cooccur entry {item!r} must be [a, b, strength]")
        try:
            s = float(s)
        except (TypeError, ValueError):
            raise TaxonomyError(source, str(a), f"cooccur strength {s!r} is not a number") from None
        a, b = sorted((str(a), str(b)))
        cooccur.append((a, b, s))
    return Constraints(
        exclusive=tuple(exclusive),
        requires=requires,
        cooccur=tuple(sorted(cooccur)),
        exclusive_names=tuple(names),
    )
