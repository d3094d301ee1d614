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
import os
import re
import sys
from pathlib import Path

import yaml
from taxonomy_common import (  # noqa: E402  (scripts/taxonomy_common.py)
    COLUMNS,
    HEADER,
    ID_RE,
    LEAF_LEVELS,
    OUT,
    REPO,
    SRC,
    BuildError,
    check_shape,
    check_sources,
    dump_yaml,
    load_source_keys,
    make_doc,
    normalise_constraints,
    summary,
)
from taxonomy_v2 import build_v2, edit_table, readme_with_table  # noqa: E402  (scripts/taxonomy_v2.py)

from vtag.hierarchy.taxonomy import Taxonomy  # noqa: E402  (taxonomy_common put the repo on sys.path)


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


# ---------------------------------------------------------------------------- main
def _shown(path: Path) -> str:
    """``path`` relative to the repo when it is inside it (``--out`` may point anywhere)."""
    return str(path.relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path)


def write_or_check(path: Path, text: str, check: bool) -> bool:
    """Write ``text`` (or, with --check, compare it); returns True if the file is up to date."""
    old = path.read_text(encoding="utf-8") if path.exists() else None
    if check:
        if old != text:
            print(f"  OUT OF DATE: {_shown(path)}")
        return old == text
    path.write_text(text, encoding="utf-8")
    print(f"  wrote {_shown(path)}")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path,
                    default=Path(os.environ.get("VTAG_SHARED_DATA", REPO.parent / "shared" / "data")),
                    help="the shared data folder holding taxonomy/ and zh_titles/ "
                         "(default $VTAG_SHARED_DATA, else ../shared/data)")
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
