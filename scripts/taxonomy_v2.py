"""demo-v1 -> demo-v2 for ``scripts/build_taxonomies.py``: the edit list (rename, move, split,
merge, add, remove) applied to the v1 rows, the constraints carried over, and the edit table of
``conf/taxonomy/README.md``."""

from __future__ import annotations

import collections
from pathlib import Path

import yaml
from taxonomy_common import (
    ID_RE,
    LEAF_LEVELS,
    BuildError,
    check_shape,
    check_sources,
    make_doc,
    normalise_constraints,
    summary,
)

from vtag.hierarchy.taxonomy import Taxonomy

# ---------------------------------------------------------------------------- demo-v2
EDIT_KINDS = ("rename", "move", "split", "merge", "add", "remove")


def _new_row(spec: dict, parent: str, replaces: list[str] | None = None) -> dict:
    row = {"id": spec["id"], "parent": parent, "name": spec["name"], "name_en": spec.get("name_en", ""),
           "source": spec.get("source", "curated")}
    if replaces:
        row["replaces"] = list(replaces)
    return row


def apply_edits(v1_rows: list[dict], edits: dict) -> tuple[list[dict], dict[str, list[str]], set[str], list[dict]]:
    """Apply the edit list to the v1 rows, in the order rename, move, split, merge, add, remove.

    Returns the v2 rows (parents before children), ``replaced`` (old id -> new ids), the removed ids
    and the rows of the new nodes (to check their sources).
    """
    rows = {r["id"]: dict(r) for r in v1_rows}
    order = [r["id"] for r in v1_rows]
    v1_ids = set(order)
    replaced: dict[str, list[str]] = {}
    removed: set[str] = set()
    new_rows: list[dict] = []

    def need(i: str, kind: str) -> dict:
        if i not in rows:
            raise BuildError(f"v2 {kind}: unknown or already edited id {i!r}")
        return rows[i]

    def insert(row: dict, after: str) -> None:
        if row["id"] in v1_ids or row["id"] in rows:
            raise BuildError(f"v2: new id {row['id']!r} is already used (ids are never reused)")
        if not ID_RE.match(row["id"]):
            raise BuildError(f"v2: id {row['id']!r} must match [a-z0-9_]+")
        rows[row["id"]] = row
        order.insert(order.index(after) + 1, row["id"])
        new_rows.append(row)

    def drop(i: str) -> None:
        rows.pop(i)
        order.remove(i)

    for e in edits.get("rename") or []:
        r = need(e["id"], "rename")
        r["name"] = e["name"]
        r["name_en"] = e.get("name_en", r["name_en"])
    for e in edits.get("move") or []:
        r = need(e["id"], "move")
        need(e["parent"], "move")
        r["parent"] = e["parent"]
    for e in edits.get("split") or []:
        old = need(e["id"], "split")
        if any(r["parent"] == old["id"] for r in rows.values()):
            raise BuildError(f"v2 split: {old['id']!r} has children; split leaves only")
        if len(e["into"]) < 2:
            raise BuildError(f"v2 split: {old['id']!r} must split into at least two nodes")
        anchor = old["id"]
        for spec in e["into"]:
            insert(_new_row(spec, spec.get("parent", old["parent"]), [old["id"]]), anchor)
            anchor = spec["id"]
        replaced[old["id"]] = [s["id"] for s in e["into"]]
        drop(old["id"])
    for e in edits.get("merge") or []:
        olds = [need(i, "merge") for i in e["ids"]]
        if len(olds) < 2:
            raise BuildError(f"v2 merge into {e['into']['id']!r}: needs at least two old ids")
        spec = e["into"]
        insert(_new_row(spec, spec.get("parent", olds[0]["parent"]), e["ids"]), olds[0]["id"])
        for o in olds:
            for r in rows.values():  # children of a merged node move to the merged node
                if r["parent"] == o["id"]:
                    r["parent"] = spec["id"]
            replaced[o["id"]] = [spec["id"]]
            drop(o["id"])
    for e in edits.get("add") or []:
        need(e["parent"], "add")
        last = max((i for i in order if i == e["parent"] or rows[i]["parent"] == e["parent"]), key=order.index)
        insert(_new_row(e, e["parent"]), last)
    for e in edits.get("remove") or []:
        need(e["id"], "remove")
        gone = {e["id"]}
        while True:  # the whole subtree goes
            more = {i for i, r in rows.items() if r["parent"] in gone} - gone
            if not more:
                break
            gone |= more
        for i in gone:
            drop(i)
        removed |= gone
    # parents first: re-sort by depth-first order of the edited tree
    kids: dict[str, list[str]] = collections.defaultdict(list)
    for i in order:
        kids[rows[i]["parent"]].append(i)
    out: list[dict] = []
    stack = list(reversed(kids[""]))
    while stack:
        i = stack.pop()
        out.append(rows[i])
        stack.extend(reversed(kids[i]))
    if len(out) != len(rows):
        raise BuildError("v2: edits left nodes unreachable from the top level (a move into its own subtree?)")
    return out, replaced, removed, new_rows


def update_constraints(cons: dict, replaced: dict[str, list[str]], removed: set[str], explicit: dict,
                       notes: list[str]) -> dict:
    """Carry the v1 constraints over: merged ids are renamed to the merged node, removed ids are
    dropped, split ids are dropped from groups/targets (a requires *key* that was split passes its
    rule to every part); then the explicit ``constraints`` edits are applied."""
    merged = {o: n[0] for o, n in replaced.items() if len(n) == 1}
    split = {o: n for o, n in replaced.items() if len(n) > 1}
    gone = removed | set(split)

    def fix(i: str) -> str | None:
        return None if i in gone else merged.get(i, i)

    out = {"exclusive": [], "requires": {}, "cooccur": []}
    drop_names = set(explicit.get("exclusive_remove") or [])
    for g in cons["exclusive"]:
        name, ids = (g["name"], g["ids"]) if isinstance(g, dict) else (None, g)
        if name in drop_names:
            notes.append(f"exclusive {name}: removed by the edit list")
            continue
        new = list(dict.fromkeys(x for x in map(fix, ids) if x))
        if new != list(ids):
            notes.append(f"exclusive {name or ids}: {list(ids)} -> {new}")
        if len(new) >= 2:
            out["exclusive"].append({"name": name, "ids": new} if name else new)
        else:
            notes.append(f"exclusive {name or ids}: fewer than two members left, dropped")
    drop_req = explicit.get("requires_remove") or []
    for a, bs in cons["requires"].items():
        if a in drop_req:
            notes.append(f"requires {a}: removed by the edit list")
            continue
        keys = split.get(a) or ([fix(a)] if fix(a) else [])
        targets = [fix(b) for b in bs]
        if None in targets:
            notes.append(f"requires {a}: dropped vanished targets {[b for b in bs if fix(b) is None]}")
        for k in keys:
            tb = [b for b in dict.fromkeys(t for t in targets if t) if b != k]
            if tb:
                out["requires"].setdefault(k, [])
                out["requires"][k] += [b for b in tb if b not in out["requires"][k]]
    best: dict[tuple[str, str], float] = {}
    for a, b, s in cons["cooccur"]:
        fa, fb = fix(a), fix(b)
        if not fa or not fb or fa == fb:
            notes.append(f"cooccur {a}~{b}: dropped (an id vanished)")
            continue
        key = tuple(sorted((fa, fb)))
        best[key] = max(s, best.get(key, 0.0))
    drop_co = {tuple(sorted(p)) for p in explicit.get("cooccur_remove") or []}
    out["cooccur"] = [[a, b, s] for (a, b), s in best.items() if (a, b) not in drop_co]
    extra = normalise_constraints({"exclusive": explicit.get("exclusive_add"), "requires": explicit.get("requires_add"),
                                   "cooccur": explicit.get("cooccur_add")})
    out["exclusive"] += extra["exclusive"]
    for a, bs in extra["requires"].items():
        out["requires"].setdefault(a, [])
        out["requires"][a] += [b for b in bs if b not in out["requires"][a]]
    out["cooccur"] += extra["cooccur"]
    return out


def build_v2(src_dir: Path, v1_tax: Taxonomy, v1_rows: list[dict], v1_cons: dict,
             keys: dict[str, set[str]] | None = None) -> tuple[dict, Taxonomy]:
    edits = yaml.safe_load((src_dir / "v2_edits.yaml").read_text(encoding="utf-8")) or {}
    unknown = set(edits) - set(EDIT_KINDS) - {"constraints"}
    if unknown:
        raise BuildError(f"v2_edits.yaml: unknown sections {sorted(unknown)}")
    allowed = {"rename": {"id", "name", "name_en", "why"}, "move": {"id", "parent", "why"},
               "split": {"id", "into", "why"}, "merge": {"ids", "into", "why"},
               "add": {"id", "parent", "name", "name_en", "source", "why"}, "remove": {"id", "why"}}
    for kind in EDIT_KINDS:
        for e in edits.get(kind) or []:
            extra = set(e) - allowed[kind]
            if extra:  # e.g. an unquoted comma in a flow mapping turns the rest into a key
                raise BuildError(f"v2_edits.yaml {kind} {e.get('id') or e.get('ids')}: unexpected keys {sorted(extra)}")
    rows, replaced, removed, new_rows = apply_edits(v1_rows, edits)
    counts = check_sources(new_rows, keys) if keys is not None else None
    notes: list[str] = []
    cons = update_constraints(v1_cons, replaced, removed, edits.get("constraints") or {}, notes)
    doc, tax = make_doc("demo-v2", "Chinese short-video type taxonomy (demo, v2: revision of demo-v1)", rows, cons)
    check_shape(tax, LEAF_LEVELS)
    errs = []
    for i in v1_tax.ids:  # every v1 id survives, is removed, or is replaced
        if i not in tax and i not in removed and i not in replaced:
            errs.append(f"v1 id {i!r} vanished without a remove/split/merge edit")
        if i in tax and (i in removed or i in replaced):
            errs.append(f"v1 id {i!r} is removed/replaced but still present")
    for n in tax.nodes:
        errs += [f"{n.id}: replaces {r!r}, which is not a vanished v1 id" for r in n.replaces
                 if r not in v1_tax or r in tax]
    if errs:
        raise BuildError("demo-v2: " + "\n  ".join(errs))
    print(summary(tax, counts))
    print("  edits: " + ", ".join(f"{k} {len(edits.get(k) or [])}" for k in EDIT_KINDS)
          + f" ({len(new_rows)} new ids, {len(removed)} removed ids)")
    for n in notes:
        print(f"  constraint carried over: {n}")
    return doc, tax


# ---------------------------------------------------------------------------- README edit table
README_BEGIN = "<!-- v2-edits:begin (generated by scripts/build_taxonomies.py from v2_edits.yaml) -->"
README_END = "<!-- v2-edits:end -->"


def edit_table(edits: dict, v1: Taxonomy) -> str:
    """The v1 -> v2 edit list as a Markdown table (for conf/taxonomy/README.md)."""

    def nm(i: str) -> str:
        return f"`{i}` {v1.node(i).name}" if i in v1 else f"`{i}`"

    lines = ["| kind | v1 | v2 | why |", "|---|---|---|---|"]
    for e in edits.get("rename") or []:
        lines.append(f"| rename | {nm(e['id'])} | {e['name']} | {e.get('why', '')} |")
    for e in edits.get("move") or []:
        old = v1.node(e["id"]).parent
        lines.append(f"| move | {nm(e['id'])} (under {nm(old)}) | under {nm(e['parent'])} | {e.get('why', '')} |")
    for e in edits.get("split") or []:
        parts = ", ".join(f"`{s['id']}` {s['name']}" for s in e["into"])
        lines.append(f"| split | {nm(e['id'])} | {parts} | {e.get('why', '')} |")
    for e in edits.get("merge") or []:
        olds = ", ".join(nm(i) for i in e["ids"])
        lines.append(f"| merge | {olds} | `{e['into']['id']}` {e['into']['name']} | {e.get('why', '')} |")
    for e in edits.get("add") or []:
        lines.append(f"| add | — | `{e['id']}` {e['name']} (under {nm(e['parent'])}) | {e.get('why', '')} |")
    for e in edits.get("remove") or []:
        lines.append(f"| remove | {nm(e['id'])} | — | {e.get('why', '')} |")
    return "\n".join(lines) + "\n"


def readme_with_table(text: str, table: str) -> str:
    if README_BEGIN not in text or README_END not in text:
        return text
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{table}{README_END}{tail}"
