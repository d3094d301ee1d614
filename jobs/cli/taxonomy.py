"""``vtag taxonomy validate | show | diff``: inspect taxonomy files (no Spark, no torch).

- ``validate FILE [--json]``: load and check a file; prints its version, sizes, leaves per level
  and constraint counts. An invalid file exits 1 with the reason (file, node, why) on stderr.
- ``show FILE [--depth N] [--node ID]``: the tree, one node per line — id, Chinese name, English
  name, and the number of leaves below it. A ``rich`` tree on a terminal, plain text otherwise.
- ``diff OLD NEW [--json]``: the changes per kind (added, removed, renamed, moved, split, merged)
  and how many old ids each migration action (keep, rename, move, reinfer) gets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata
from typing import Any, Sequence

from vtag.hierarchy.diff import CAUSES, migration_breakdown, migration_counts, migration_map
from vtag.hierarchy.diff import diff as taxonomy_diff
from vtag.hierarchy.taxonomy import Taxonomy, TaxonomyError


def _arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vtag taxonomy", description="Validate, show and diff taxonomy files.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="{validate,show,diff}")

    p = sub.add_parser("validate", help="check a taxonomy file and print its summary")
    p.add_argument("file", help="taxonomy YAML file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_validate)

    p = sub.add_parser("show", help="print the tree with leaf counts")
    p.add_argument("file", help="taxonomy YAML file")
    p.add_argument("--depth", type=int, default=None, metavar="N",
                   help="show N levels (counted from the starting node)")
    p.add_argument("--node", default=None, metavar="ID", help="show only the subtree of this node")
    p.set_defaults(handler=_show)

    p = sub.add_parser("diff", help="changes from OLD to NEW and migration-action counts")
    p.add_argument("old", help="older taxonomy YAML file")
    p.add_argument("new", help="newer taxonomy YAML file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_diff)
    return parser


def main(args: argparse.Namespace) -> int:
    try:
        return args.handler(args)
    except TaxonomyError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"valid": False, "error": str(exc), "file": exc.source, "node": exc.node,
                              "reason": exc.reason}, ensure_ascii=False))
        print(f"vtag taxonomy {args.action}: invalid taxonomy: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a bad `replaces` entry, an unknown --node, a bad --depth
        print(f"vtag taxonomy {args.action}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `vtag taxonomy show ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# ---------------------------------------------------------------------- validate
def summary(tax: Taxonomy) -> dict[str, Any]:
    """The facts ``validate`` reports, JSON-ready."""
    c = tax.constraints
    nodes_per_level = {str(h): int((tax.levels == h).sum()) for h in range(1, tax.max_depth + 1)}
    return {
        "file": tax.source,
        "valid": True,
        "label": tax.label,
        "version": tax.version,
        "nodes": tax.n_nodes,
        "leaves": len(tax.leaf_ids),
        "max_depth": tax.max_depth,
        "nodes_per_level": nodes_per_level,
        "leaves_per_level": {str(k): v for k, v in tax.leaves_per_level.items()},
        "level1": len(tax.level_indices(1)),
        "exclusive_groups": len(c.exclusive),
        "requires_rules": sum(len(bs) for bs in c.requires.values()),
        "cooccur_pairs": len(c.cooccur),
    }


def _validate(args: argparse.Namespace) -> int:
    info = summary(Taxonomy.load(args.file))
    if args.json:
        print(json.dumps(info, ensure_ascii=False, sort_keys=False))
        return 0
    per_level = ", ".join(f"level {k}: {v}" for k, v in info["leaves_per_level"].items())
    nodes_level = ", ".join(f"{k}: {v}" for k, v in info["nodes_per_level"].items())
    print(f"OK {info['file']}")
    print(f"  label        {info['label'] or '-'}")
    print(f"  version      {info['version']}")
    print(f"  nodes        {info['nodes']} (per level {nodes_level})")
    print(f"  leaves       {info['leaves']} ({per_level})")
    print(f"  max depth    {info['max_depth']}")
    print(f"  constraints  {info['exclusive_groups']} exclusive groups, {info['requires_rules']} requires "
          f"rules, {info['cooccur_pairs']} cooccur pairs")
    return 0


# ---------------------------------------------------------------------- show
def tree_lines(tax: Taxonomy, node: str | None = None, depth: int | None = None) -> list[str]:
    """Plain indented lines: ``id  name  name_en  [N leaves]`` (``[leaf]`` for a leaf), two spaces
    per level below the start; level-1 nodes in node order (by id), children in file order."""
    leaf_count = tax.leaf_counts
    out: list[str] = []

    def visit(nid: str, rel: int) -> None:
        out.append("  " * (rel - 1) + _label(tax, nid, int(leaf_count[tax.index[nid]])))
        if depth is None or rel < depth:
            for child in tax.children(nid):
                visit(child, rel + 1)

    for start in _starts(tax, node, depth):
        visit(start, 1)
    return out


def _starts(tax: Taxonomy, node: str | None, depth: int | None) -> tuple[str, ...]:
    if depth is not None and depth < 1:
        raise ValueError(f"--depth must be at least 1, got {depth}")
    if node is None:
        return tax.children(None)
    if node not in tax:
        raise ValueError(f"unknown node id {node!r} in {tax.source}")
    return (node,)


def _label(tax: Taxonomy, nid: str, leaves: int) -> str:
    n = tax.by_id[nid]
    parts = [n.id, n.name] + ([n.name_en] if n.name_en else [])
    parts.append("[leaf]" if n.is_leaf else f"[{leaves} leaves]")
    return "  ".join(parts)


def _show(args: argparse.Namespace) -> int:
    tax = Taxonomy.load(args.file)
    header = (f"{tax.label or tax.source}  version {tax.version}  {tax.n_nodes} nodes, "
              f"{len(tax.leaf_ids)} leaves, max depth {tax.max_depth}")
    if sys.stdout.isatty():
        _show_rich(tax, header, args.node, args.depth)
    else:
        print(header)
        for line in tree_lines(tax, args.node, args.depth):
            print(line)
    return 0


def _show_rich(tax: Taxonomy, header: str, node: str | None, depth: int | None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.tree import Tree

    leaf_count = tax.leaf_counts
    root = Tree(escape(header))

    def visit(parent: Tree, nid: str, rel: int) -> None:
        n = tax.by_id[nid]
        en = f" [dim]{escape(n.name_en)}[/dim]" if n.name_en else ""
        count = "[green]leaf[/green]" if n.is_leaf else f"[cyan]{int(leaf_count[tax.index[nid]])} leaves[/cyan]"
        branch = parent.add(f"[bold]{escape(n.id)}[/bold] {escape(n.name)}{en} ({count})")
        if depth is None or rel < depth:
            for child in tax.children(nid):
                visit(branch, child, rel + 1)

    for start in _starts(tax, node, depth):
        visit(root, start, 1)
    Console().print(root)


# ---------------------------------------------------------------------- diff
def _diff(args: argparse.Namespace) -> int:
    old, new = Taxonomy.load(args.old), Taxonomy.load(args.new)
    d = taxonomy_diff(old, new)
    migration = migration_map(old, new)
    counts = migration_counts(migration)
    causes = migration_breakdown(migration)
    if args.json:
        out: dict[str, Any] = {
            "old": {"file": old.source, "label": old.label, "version": old.version},
            "new": {"file": new.source, "label": new.label, "version": new.version},
            **d.to_dict(),
            "counts": d.counts(),
            "migration": counts,
            "migration_causes": causes,
        }
        print(json.dumps(out, ensure_ascii=False))
        return 0
    print(f"{old.label or old.source} ({old.version}) -> {new.label or new.source} ({new.version})")
    name = {**{n.id: n.name for n in old.nodes}, **{n.id: n.name for n in new.nodes}}
    sections: list[tuple[str, Sequence[str], list[Sequence[str]]]] = [
        ("added", ("id", "name", "parent"), [(e.id, e.name, e.parent or "-") for e in d.added]),
        ("removed", ("id", "name", "parent"), [(e.id, e.name, e.parent or "-") for e in d.removed]),
        ("renamed", ("id", "old name", "new name"), [(e.id, e.old_name, e.new_name) for e in d.renamed]),
        ("moved", ("id", "name", "old parent", "new parent"),
         [(e.id, e.name, e.old_parent or "-", e.new_parent or "-") for e in d.moved]),
        ("split", ("old id", "old name", "into"),
         [(e.old_id, e.old_name, ", ".join(f"{i} {name[i]}" for i in e.new_ids)) for e in d.split]),
        ("merged", ("new id", "new name", "from"),
         [(e.new_id, e.new_name, ", ".join(f"{i} {name[i]}" for i in e.old_ids)) for e in d.merged]),
    ]
    if d.is_empty:
        print("\nno node changes" + ("" if old.version == new.version else " (constraints differ)"))
    for title, headers, rows in sections:
        if not rows:
            continue
        print(f"\n{title} ({len(rows)})")
        for line in _table(headers, rows):
            print("  " + line)
    for line in migration_summary(counts, causes):
        print(line)
    return 0


def migration_summary(counts: dict[str, int], causes: dict[str, dict[str, int]]) -> list[str]:
    """The lines that close ``vtag taxonomy diff``: each migration action's count of old ids, split by
    cause, so that ``rename 13`` reads as ``7 renamed, 6 under a renamed ancestor`` beside the
    ``renamed (7)`` section (the sections list nodes that changed themselves; the actions count every
    old id, descendants included).

    Parameters
    ----------
    counts
        :func:`vtag.hierarchy.diff.migration_counts`.
    causes
        :func:`vtag.hierarchy.diff.migration_breakdown` of the same migration.
    """
    total = sum(counts.values())
    lines = [f"\nmigration of the {total} old ids (descendants of a changed node included):"]
    width = max(len(str(v)) for v in counts.values())
    for action, n in counts.items():
        parts = ", ".join(f"{c} {CAUSES[action][k]}" for k, c in causes.get(action, {}).items())
        detail = f": {parts}" if parts and action != "keep" else ""
        lines.append(f"  {action:<8}{n:>{width}}{detail}")
    return lines


def _width(text: str) -> int:
    """Terminal columns of ``text``: CJK wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _table(headers: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    cols = list(zip(*([headers] + [tuple(map(str, r)) for r in rows])))
    widths = [max(_width(c) for c in col) for col in cols]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c + " " * (w - _width(c)) for c, w in zip(map(str, cells), widths)).rstrip()

    return [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
