"""The shared parts of ``scripts/build_taxonomies.py``: the source-key checks against the real
public trees, assembling rows into a validated taxonomy document, its shape checks and its YAML."""

from __future__ import annotations

import collections
import csv
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
