#!/usr/bin/env python
"""Build the vtag taxonomies (conf/taxonomy/*.yaml) from curated sources.

Inputs (all under the repo unless noted):
  scripts/taxonomy_src/v1/<NN>_<top>.tsv   curated demo-v1 nodes: id, parent, name, name_en, source
  scripts/taxonomy_src/v1_constraints.yaml demo-v1 constraints (exclusive / requires / cooccur)
  scripts/taxonomy_src/v2_edits.yaml       the demo-v1 -> demo-v2 edit list
  <shared>/taxonomy/...                    the real public trees, read-only (default ../shared/data)

Every non-``curated`` ``source`` key is checked against the real files:
  toutiao:<path>     a path of toutiao_multilevel/all_cat.txt (or a prefix of one: implied nodes)
  bilibili:tid=<N>   a tid of bilibili/zone_v1_tid.tsv
  iab:<ID>           a Unique ID of iab/Content_Taxonomy_3.1.tsv
  yt8m:<Name>        an entity Name or a Vertical of yt8m/vocabulary.csv
  baidu:<label>      a label of baidu_videotag/label_3396.txt

Outputs: conf/taxonomy/demo-v1.yaml, demo-v2.yaml, bilibili-v1.yaml. Each is validated with
vtag.hierarchy.taxonomy.Taxonomy plus the extra checks here before anything is written.

    .venv/bin/python scripts/build_taxonomies.py            # build, validate, write
    .venv/bin/python scripts/build_taxonomies.py --check    # build and validate; fail if files differ
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vtag.hierarchy.taxonomy import Taxonomy, TaxonomyError  # noqa: E402

SRC = REPO / "scripts" / "taxonomy_src"
OUT = REPO / "conf" / "taxonomy"
ID_RE = re.compile(r"^[a-z0-9_]+$")
COLUMNS = ["id", "parent", "name", "name_en", "source"]
LEAF_LEVELS = {3, 4, 5}


class BuildError(Exception):
    pass


# ---------------------------------------------------------------------------- real source keys
def load_source_keys(shared: Path) -> dict[str, set[str]]:
    """The valid keys of each real tree, read from the shared (read-only) data."""
    tax = shared / "taxonomy"
    keys: dict[str, set[str]] = {}

    toutiao: set[str] = set()
    for line in (tax / "toutiao_multilevel" / "all_cat.txt").read_text(encoding="utf-8").splitlines():
        parts = line.strip().split("/")
        if parts[0]:
            for i in range(1, len(parts) + 1):  # a listed path and its (possibly implied) prefixes
                toutiao.add("/".join(parts[:i]))
    keys["toutiao"] = toutiao

    with open(tax / "bilibili" / "zone_v1_tid.tsv", encoding="utf-8", newline="") as f:
        keys["bilibili"] = {f"tid={r['tid']}" for r in csv.DictReader(f, delimiter="\t")}

    iab: set[str] = set()
    with open(tax / "iab" / "Content_Taxonomy_3.1.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    for r in rows[2:]:  # two header rows
        if r and r[0].strip():
            iab.add(r[0].strip())
    keys["iab"] = iab

    yt8m: set[str] = set()
    with open(tax / "yt8m" / "vocabulary.csv", encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            yt8m.add(r["Name"])
            yt8m.update(r[k] for k in ("Vertical1", "Vertical2", "Vertical3") if r[k])
    keys["yt8m"] = yt8m

    labels = (tax / "baidu_videotag" / "label_3396.txt").read_text(encoding="utf-8").splitlines()
    keys["baidu"] = {x.strip() for x in labels if x.strip()}
    return keys


def check_sources(rows: list[dict], keys: dict[str, set[str]]) -> collections.Counter:
    """Every non-curated source key must exist in its real tree; returns nodes per source."""
    counts: collections.Counter = collections.Counter()
    bad = []
    for r in rows:
        src = r["source"]
        if src == "curated":
            counts["curated"] += 1
            continue
        tree, _, key = src.partition(":")
        if tree not in keys or not key:
            bad.append(f"{r['id']}: unknown source {src!r}")
        elif key not in keys[tree]:
            bad.append(f"{r['id']}: {tree} has no key {key!r}")
        else:
            counts[tree] += 1
    if bad:
        raise BuildError("source keys not found in the shared trees:\n  " + "\n  ".join(bad))
    return counts


# ---------------------------------------------------------------------------- curated v1 rows
def read_v1_rows(src_dir: Path) -> list[dict]:
    """All rows of v1/*.tsv in file order; checks the columns, ids and parents."""
    rows: list[dict] = []
    seen: dict[str, str] = {}
    files = sorted((src_dir / "v1").glob("*.tsv"))
    if not files:
        raise BuildError(f"no curated files in {src_dir / 'v1'}")
    for path in files:
        with open(path, encoding="utf-8", newline="") as f:
            lines = [ln.rstrip("\n") for ln in f if ln.strip() and not ln.startswith("#")]
        if lines[0].split("\t") != COLUMNS:
            raise BuildError(f"{path.name}: header must be {COLUMNS}")
        tops = 0
        for n, line in enumerate(lines[1:], start=2):
            cells = line.split("\t")
            if len(cells) != len(COLUMNS):
                raise BuildError(f"{path.name}:{n}: expected {len(COLUMNS)} tab-separated cells, got {len(cells)}")
            r = dict(zip(COLUMNS, (c.strip() for c in cells)))
            r["file"] = path.name
            where = f"{path.name}:{n} ({r['id']})"
            if not ID_RE.match(r["id"]):
                raise BuildError(f"{where}: id must match [a-z0-9_]+")
            if r["id"] in seen:
                raise BuildError(f"{where}: duplicate id, first in {seen[r['id']]}")
            if not r["name"] or not r["name_en"] or not r["source"]:
                raise BuildError(f"{where}: name, name_en and source are required")
            if r["parent"] and r["parent"] not in seen:
                raise BuildError(f"{where}: parent {r['parent']!r} must be defined earlier")
            tops += not r["parent"]
            seen[r["id"]] = path.name
            rows.append(r)
        if tops != 1:
            raise BuildError(f"{path.name}: must hold exactly one level-1 node (parent empty), has {tops}")
    return rows


# ---------------------------------------------------------------------------- assembling
def nest(rows: list[dict]) -> list[dict]:
    """Flat rows (parents first) -> the nested ``nodes`` list of docs/taxonomy-format.md."""
    made: dict[str, dict] = {}
    tops: list[dict] = []
    for r in rows:
        node: dict = {"id": r["id"], "name": r["name"]}
        for key in ("name_en", "source"):
            if r.get(key):
                node[key] = r[key]
        if r.get("replaces"):
            node["replaces"] = list(r["replaces"])
        made[r["id"]] = node
        if r["parent"]:
            made[r["parent"]].setdefault("children", []).append(node)
        else:
            tops.append(node)
    return tops


def normalise_constraints(raw: dict) -> dict:
    """The constraints block in file form, with a stable layout."""
    out = {"exclusive": [], "requires": {}, "cooccur": []}
    for g in raw.get("exclusive") or []:
        out["exclusive"].append({"name": g["name"], "ids": list(g["ids"])} if isinstance(g, dict) else list(g))
    for a, bs in (raw.get("requires") or {}).items():
        out["requires"][a] = [bs] if isinstance(bs, str) else list(bs)
    for c in raw.get("cooccur") or []:
        a, b, s = (c["a"], c["b"], c["strength"]) if isinstance(c, dict) else c
        out["cooccur"].append([a, b, float(s)])
    return out


def make_doc(label: str, description: str, rows: list[dict], constraints: dict) -> tuple[dict, Taxonomy]:
    """The YAML document and the validated Taxonomy (the loader's own checks)."""
    doc = {"label": label, "description": description, "nodes": nest(rows), "constraints": constraints}
    try:
        tax = Taxonomy.from_dict(doc, source=label)
    except TaxonomyError as exc:
        raise BuildError(f"{label}: rejected by vtag.hierarchy.taxonomy: {exc}") from exc
    doc = {"label": label, "description": description, "version": tax.version, **{k: doc[k] for k in ("nodes", "constraints")}}
    return doc, tax


def check_shape(tax: Taxonomy, leaf_levels: set[int] | None, min_leaves_per_level: int = 0,
                leaves_range: tuple[int, int] | None = None) -> None:
    """Checks beyond the loader: leaf levels, distinct sibling names, sizes."""
    label = tax.label
    errs = []
    for parent in [None, *tax.ids]:
        names = collections.Counter(tax.by_id[c].name for c in tax.children(parent))
        errs += [f"{parent or '<root>'}: two children named {n!r}" for n, k in names.items() if k > 1]
    if leaf_levels is not None:
        for n in tax.nodes:
            if n.is_leaf and n.level not in leaf_levels:
                errs.append(f"{n.id}: leaf at level {n.level}, allowed {sorted(leaf_levels)}")
        for lvl in sorted(leaf_levels):
            got = tax.leaves_per_level.get(lvl, 0)
            if got < min_leaves_per_level:
                errs.append(f"only {got} leaves at level {lvl}, need >= {min_leaves_per_level}")
    if leaves_range is not None:
        lo, hi = leaves_range
        if not lo <= len(tax.leaf_ids) <= hi:
            errs.append(f"{len(tax.leaf_ids)} leaves, need {lo}..{hi}")
    if errs:
        raise BuildError(f"{label}: " + "\n  ".join(["shape check failed:", *errs]))


def dump_yaml(doc: dict, header: str) -> str:
    body = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=120)
    return header + body


HEADER = (
    "# GENERATED by scripts/build_taxonomies.py from scripts/taxonomy_src/ -- do not edit by hand.\n"
    "# Format: docs/taxonomy-format.md. Sources and licences: conf/taxonomy/README.md.\n"
)


def summary(tax: Taxonomy, counts: collections.Counter | None = None) -> str:
    c = tax.constraints
    parts = [
        f"{tax.label}: version {tax.version}, {len(tax.nodes)} nodes, {len(tax.leaf_ids)} leaves, "
        f"max depth {tax.max_depth}",
        f"  level-1 nodes: {len(tax.children(None))}; leaves per level: {tax.leaves_per_level}",
        f"  constraints: {len(c.exclusive)} exclusive, {len(c.requires)} requires, {len(c.cooccur)} cooccur",
    ]
    if counts:
        parts.append("  nodes per source: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    return "\n".join(parts)


# ---------------------------------------------------------------------------- demo-v1
def build_v1(src_dir: Path, keys: dict[str, set[str]]) -> tuple[dict, Taxonomy, list[dict], dict]:
    rows = read_v1_rows(src_dir)
    counts = check_sources(rows, keys)
    raw = yaml.safe_load((src_dir / "v1_constraints.yaml").read_text(encoding="utf-8")) or {}
    constraints = normalise_constraints(raw)
    doc, tax = make_doc("demo-v1", "Chinese short-video type taxonomy (demo, v1)", rows, constraints)
    check_shape(tax, LEAF_LEVELS, min_leaves_per_level=50, leaves_range=(700, 900))
    print(summary(tax, counts))
    return doc, tax, rows, constraints


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


# ---------------------------------------------------------------------------- bilibili-v1
_NOTE_RE = re.compile(r"\s*\((?:原|重定向)[^)]*\)\s*$")  # "美食制作(原[生活]->[美食圈])", "健身(重定向)"


def build_bilibili(shared: Path) -> tuple[dict, Taxonomy]:
    """bilibili-v1: the classic tid zones, 2 levels, ids are the tids (as strings).

    Kept: every non-offline main zone and sub-zone, plus the offline sub-zones that
    zh_titles/bilibili_popular_2023/videos.jsonl uses. A tid listed twice in zone_v1_tid.tsv
    (an old slot marked "(重定向)" = redirect, plus its current home) is placed at its online row;
    with no online row, at the row under the parent the videos name. Annotations such as
    "(原...)" / "(重定向)" are stripped from names.
    """
    with open(shared / "taxonomy" / "bilibili" / "zone_v1_tid.tsv", encoding="utf-8", newline="") as f:
        zones = list(csv.DictReader(f, delimiter="\t"))
    used: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    with open(shared / "zh_titles" / "bilibili_popular_2023" / "videos.jsonl", encoding="utf-8") as f:
        for line in f:
            v = json.loads(line)
            used[str(v["tid"])][str(v["parent_tid"])] += 1
    by_tid: dict[str, list[dict]] = collections.defaultdict(list)
    for z in zones:
        by_tid[z["tid"]].append(z)

    def pick(tid: str) -> dict | None:
        rows = by_tid[tid]
        online = [z for z in rows if z["offline"] == "0"]
        if online:
            return online[0]
        if tid in used:
            parent = used[tid].most_common(1)[0][0]
            return next((z for z in rows if z["parent_tid"] == parent), rows[-1])
        return None

    mains = [z for z in zones if z["level"] == "1" and z["offline"] == "0"]
    main_ids = {z["tid"] for z in mains}
    rows: list[dict] = []
    for m in mains:
        rows.append({"id": m["tid"], "parent": "", "name": m["name"], "name_en": m["code"],
                     "source": f"bilibili:tid={m['tid']}"})
    placed: set[str] = set()
    for tid in dict.fromkeys(z["tid"] for z in zones if z["level"] == "2"):
        z = pick(tid)
        if z is None or tid in main_ids:
            continue
        if z["parent_tid"] not in main_ids:
            raise BuildError(f"bilibili-v1: tid {tid} sits under offline main zone {z['parent_tid']}")
        names = [_NOTE_RE.sub("", r["name"]) for r in by_tid[tid] if r["offline"] == "0"] or [_NOTE_RE.sub("", z["name"])]
        rows.append({"id": tid, "parent": z["parent_tid"], "name": names[0], "name_en": z["code"],
                     "source": f"bilibili:tid={tid}", "_offline": z["offline"] == "1"})
        placed.add(tid)
    rows.sort(key=lambda r: [m["tid"] for m in mains].index(r["parent"] or r["id"]) * 2 + bool(r["parent"]))
    doc, tax = make_doc("bilibili-v1", "Bilibili classic video zones (tid), 2 levels", rows, normalise_constraints({}))
    check_shape(tax, leaf_levels=None)
    for m in mains:
        if not tax.children(m["tid"]):
            raise BuildError(f"bilibili-v1: main zone {m['tid']} has no sub-zone")
    missing = [t for t in used if t not in tax]
    if missing:
        raise BuildError(f"bilibili-v1: tids used by bilibili_popular_2023 are missing: {missing}")
    offline = sorted((r["id"] for r in rows if r.get("_offline")), key=int)
    print(summary(tax))
    print(f"  {len(mains)} main zones, {len(placed)} sub-zones ({len(offline)} offline, kept because videos use them: {offline})")
    for tid, parents in sorted(used.items(), key=lambda kv: int(kv[0])):
        for p, n in parents.items():
            if tax.node(tid).parent != p and tid != p:
                print(f"  note: videos.jsonl puts tid {tid} under {p} ({n} videos); zone_v1 places it online under "
                      f"{tax.node(tid).parent} ({tax.node(tax.node(tid).parent).name}) -- kept the online placement")
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


# ---------------------------------------------------------------------------- main
def write_or_check(path: Path, text: str, check: bool) -> bool:
    """Write ``text`` (or, with --check, compare it); returns True if the file is up to date."""
    old = path.read_text(encoding="utf-8") if path.exists() else None
    if check:
        if old != text:
            print(f"  OUT OF DATE: {path.relative_to(REPO)}")
        return old == text
    path.write_text(text, encoding="utf-8")
    print(f"  wrote {path.relative_to(REPO)}")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data",
                    help="the shared data folder holding taxonomy/ and zh_titles/ (default ../shared/data)")
    ap.add_argument("--src", type=Path, default=SRC, help="curated sources (default scripts/taxonomy_src)")
    ap.add_argument("--out", type=Path, default=OUT, help="output folder (default conf/taxonomy)")
    ap.add_argument("--check", action="store_true", help="validate and compare with the files; write nothing")
    args = ap.parse_args(argv)
    try:
        keys = load_source_keys(args.shared)
        outputs: list[tuple[str, dict]] = []
        v1_doc, v1_tax, v1_rows, v1_cons = build_v1(args.src, keys)
        outputs.append(("demo-v1.yaml", v1_doc))
        if (args.src / "v2_edits.yaml").exists():
            v2_doc, _ = build_v2(args.src, v1_tax, v1_rows, v1_cons, keys)
            outputs.append(("demo-v2.yaml", v2_doc))
            edits = yaml.safe_load((args.src / "v2_edits.yaml").read_text(encoding="utf-8")) or {}
            table = edit_table(edits, v1_tax)
        else:
            table = ""
        bili_doc, _ = build_bilibili(args.shared)
        outputs.append(("bilibili-v1.yaml", bili_doc))
    except BuildError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    ok = True
    for name, doc in outputs:
        path = args.out / name
        ok &= write_or_check(path, dump_yaml(doc, HEADER), args.check)
        if path.exists():
            Taxonomy.load(path)  # the written file itself must load
    readme = args.out / "README.md"
    if table and readme.exists():
        ok &= write_or_check(readme, readme_with_table(readme.read_text(encoding="utf-8"), table), args.check)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
