"""The public Chinese title sets of ``$VTAG_SHARED_DATA/zh_titles`` as labeled dumps with a taxonomy
file, the input ``bench/realdata.py`` (and ``vtag train`` / ``vtag evaluate``) takes: other data than
Bilibili's, to check that nothing is tuned to one file.

Sets (``--set``):

- ``tnews``: TNEWS (CLUE; Toutiao news titles, dev + test, 12,928 rows), the keywords as the
  description. Labels are the 14 ``news_*`` roots of the **4-level Toutiao tree**
  (``taxonomy/toutiao_multilevel/all_cat.txt``, 1,094 nodes): every label stops at level 1 of a
  deeper tree, the partial-label case (a platform whose videos are labeled to level 1 or 2 only).
  ``news_stock`` (62 rows) is not a node of that tree; its rows are written with it and dropped
  (counted) by the reader.
- ``thucnews``: THUCNews titles (dev + test, 20,000 rows), 10 flat classes.
- ``nlpcc``: NLPCC 2017 headlines (36,000 rows, jieba tokens joined back), 18 flat classes.
- ``bilibili``: a Bilibili JSONL file (``--jsonl``, default the shared one; the format of
  ``bench/bilibili.py``) with ``conf/taxonomy/bilibili-v1.yaml``, **one dt partition per upload
  day** (the calendar day of ``pubdate`` in ``Asia/Shanghai``), as the nightly dumps deliver it:
  ``vtag train --dates ..D`` on the earlier days and ``vtag evaluate --dates D+1..`` on the later
  ones. Rows without an upload time go to the earliest day (the time split keeps them on the
  training side); rows without a known ``tid`` are kept (as a later year's new zones would come)
  and counted: ``vtag train`` drops them, ``vtag evaluate`` tags them without scoring them.
- ``bilibili_coarse``: the shared Bilibili file (``bench/bilibili.py``'s reader, uploaders and
  times kept) with the labels of every third level-1 category of ``conf/taxonomy/bilibili-v1.yaml``
  (in taxonomy order, the first included) cut to that category: whole branches labeled coarsely,
  as on a platform whose taxonomy is finer than its labels. The time split works on it.

The first three have no uploaders or upload times: ``bench/realdata.py --split uploader`` is then a
random 80/20 split (each row its own group).

Usage::

    python bench/public_titles.py --set tnews --out /tmp/tnews
    python bench/realdata.py --data /tmp/tnews/dump --taxonomy /tmp/tnews/taxonomy.yaml --split uploader
    python bench/public_titles.py --set bilibili --out /tmp/bili   # prints the days and the 80/20 cut
    vtag train --config conf/model/text-context.yaml --taxonomy conf/taxonomy/bilibili-v1.yaml \
        --data /tmp/bili/dump --dates ..2023-10-13 --out /tmp/bili/bundle
    vtag evaluate --bundle /tmp/bili/bundle --data /tmp/bili/dump --dates 2023-10-14..
    python bench/public_titles.py --set bilibili_coarse --out /tmp/bcut
    python bench/realdata.py --data /tmp/bcut/dump --taxonomy /tmp/bcut/taxonomy.yaml --split time
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_DATA = Path(os.environ.get("VTAG_SHARED_DATA", REPO.parent / "shared" / "data"))
SETS = ("tnews", "thucnews", "nlpcc", "bilibili", "bilibili_coarse")
#: ``bilibili_coarse``: the labels of every this-many-th level-1 category are cut to it
COARSE_EVERY = 3
#: the partition every row is written to (the sets carry no dates)
DAY = "2020-01-01"
#: ``bilibili``: the time zone whose calendar day of a row's upload time names its dt partition
BILIBILI_TZ = "Asia/Shanghai"
#: ``bilibili``: the share of rows, by day, that the printed cut leaves for evaluation
TEST_FRACTION = 0.2


def toutiao_taxonomy(all_cat: Path) -> dict:
    """``all_cat.txt`` (one ``/``-separated path a line) -> a taxonomy mapping (``docs/taxonomy-format.md``):
    node ids are the paths with ``.`` for ``/``; the 24 implied intermediate nodes are added."""
    paths = [p.strip() for p in all_cat.read_text(encoding="utf-8").splitlines() if p.strip()]
    nodes = set()
    for p in paths:
        parts = p.split("/")
        nodes.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    children: dict[str | None, list[str]] = {}
    for p in sorted(nodes):
        children.setdefault(p.rsplit("/", 1)[0] if "/" in p else None, []).append(p)

    def node(p: str) -> dict:
        out = {"id": p.replace("/", "."), "name": p.rsplit("/", 1)[-1]}
        if p in children:
            out["children"] = [node(c) for c in children[p]]
        return out

    return {"label": "toutiao-v1", "description": "Toutiao multi-level content categories (all_cat.txt)",
            "nodes": [node(p) for p in children[None]]}


def flat_taxonomy(label: str, classes: list[str]) -> dict:
    return {"label": f"{label}-v1", "description": f"{label} classes (flat)",
            "nodes": [{"id": c, "name": c} for c in classes]}


def read_set(name: str, shared: Path = SHARED_DATA) -> tuple[list[tuple[str, str, str | None, str]], dict]:
    """``([(row id, title, description or None, label id)], taxonomy mapping)`` of one set; a row's
    id is its file's name and line index (``dev0``, ``test17``)."""
    base = shared / "zh_titles"
    rows: list[tuple[str, str, str | None, str]] = []
    if name == "tnews":
        for f in ("dev", "test"):
            with open(base / "tnews_clue" / f"{f}.json", encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    d = json.loads(line)
                    rows.append((f"{f}{i}", d["sentence"], d.get("keywords") or None, d["label_desc"]))
        return rows, toutiao_taxonomy(shared / "taxonomy" / "toutiao_multilevel" / "all_cat.txt")
    if name == "thucnews":
        classes = (base / "thucnews_titles" / "class.txt").read_text(encoding="utf-8").split()
        for f in ("dev", "test"):
            with open(base / "thucnews_titles" / f"{f}.txt", encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    title, k = line.rstrip("\n").rsplit("\t", 1)
                    rows.append((f"{f}{i}", title, None, classes[int(k)]))
        return rows, flat_taxonomy(name, classes)
    if name == "nlpcc":
        with open(base / "nlpcc2017_headlines" / "test_full.word.tsv", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                label, words = line.rstrip("\n").split("\t", 1)
                rows.append((f"test{i}", "".join(words.split(" ")), None, label))
        return rows, flat_taxonomy(name, sorted({r[3] for r in rows}))
    if name in ("bilibili", "bilibili_coarse"):
        reader = "write_bilibili()" if name == "bilibili" else "coarse_bilibili()"
        raise ValueError(f"{name} has uploaders and times, not title rows: {reader} reads it")
    raise ValueError(f"unknown set {name!r}; one of {', '.join(SETS)}")


def coarse_bilibili(shared: Path = SHARED_DATA, every: int = COARSE_EVERY):
    """``(frame, taxonomy file)``: the shared Bilibili videos (``bench/bilibili.py``'s reader) with
    the labels of every ``every``-th level-1 category (taxonomy order, the first included) cut to
    that category."""
    import bilibili

    from vtag.hierarchy.taxonomy import Taxonomy

    tax_path = bilibili.DEFAULT_TAXONOMY
    tax = Taxonomy.load(tax_path)
    frame, _ = bilibili.read_videos(shared / "zh_titles" / "bilibili_popular_2023" / "videos.jsonl", tax)
    coarse = set([n.id for n in tax.nodes if n.level == 1][::every])
    frame["labels"] = [[tax.path(x[0])[0]] if tax.path(x[0])[0] in coarse else list(x) for x in frame["labels"]]
    return frame, tax_path


def upload_days(upload_ts, tz: str = BILIBILI_TZ) -> list[str]:
    """The dt partition (``YYYY-MM-DD``, the calendar day in ``tz``) of each upload time; rows
    without one get the earliest day. Raises ValueError when no row has an upload time."""
    import pandas as pd

    ts = pd.to_datetime(pd.Series(upload_ts), utc=True)
    if ts.isna().all():
        raise ValueError("no row has an upload time (pubdate): the rows cannot be put on days")
    days = ts.dt.tz_convert(tz).dt.strftime("%Y-%m-%d")
    return days.fillna(days.dropna().min()).tolist()


def day_cut(days: list[str], test_fraction: float = TEST_FRACTION) -> tuple[str, str, float]:
    """``(last training day, first test day, test share)``: the day boundary whose later days hold
    the share of rows nearest ``test_fraction`` (at least one day on each side). Raises ValueError
    with fewer than two days."""
    import collections

    counts = sorted(collections.Counter(days).items())
    if len(counts) < 2:
        raise ValueError(f"{len(counts)} day(s): no day boundary to split on")
    n, later, best = len(days), 0, None
    for i in range(len(counts) - 1, 0, -1):
        later += counts[i][1]
        if best is None or abs(later / n - test_fraction) < abs(best[2] - test_fraction):
            best = (counts[i - 1][0], counts[i][0], later / n)
    return best


def write_bilibili(jsonl: Path, out: Path, limit: int | None = None,
                   tz: str = BILIBILI_TZ) -> tuple[Path, Path, list[str], int]:
    """``jsonl`` (``bench/bilibili.py``'s format) -> ``<out>/dump/dt=<upload day>/part-0.parquet``,
    one partition per day (:func:`upload_days`), and ``<out>/taxonomy.yaml`` (bilibili-v1);
    returns ``(dump root, taxonomy file, the day of each row written, rows whose tid is missing or
    not in the taxonomy)``. Those rows are written too, as the nightly dumps would carry them: ``vtag train``
    drops them and ``vtag evaluate`` tags them without scoring them, both counting them."""
    import bilibili

    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.data import write_dump

    tax = Taxonomy.load(bilibili.DEFAULT_TAXONOMY)
    frame, unknown = bilibili.read_videos(jsonl, tax, keep_unknown=True)
    out.mkdir(parents=True, exist_ok=True)
    frame = frame.iloc[:limit] if limit else frame
    tax_path = out / "taxonomy.yaml"
    tax_path.write_bytes(Path(bilibili.DEFAULT_TAXONOMY).read_bytes())
    days = upload_days(frame["upload_ts"], tz)
    for day, rows in frame.groupby(days, sort=True):
        write_dump(rows, out / "dump", day)
    return out / "dump", tax_path, days, unknown


def write_set(name: str, out: Path, shared: Path = SHARED_DATA, limit: int | None = None,
              jsonl: Path | None = None) -> tuple[Path, Path, int]:
    """Write ``<out>/dump/dt=<DAY>/part-0.parquet`` (``LABELED_SCHEMA``; ``limit``: the first rows
    only; ``bilibili``: one partition per upload day, from ``jsonl`` or the shared file) and
    ``<out>/taxonomy.yaml``; returns ``(dump root, taxonomy file, rows)``."""
    import pandas as pd
    import yaml

    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.data import write_dump

    out.mkdir(parents=True, exist_ok=True)
    if name == "bilibili":
        dump, tax_path, days, _ = write_bilibili(jsonl or shared / "zh_titles" / "bilibili_popular_2023" / "videos.jsonl",
                                                 out, limit)
        return dump, tax_path, len(days)
    if name == "bilibili_coarse":
        frame, source = coarse_bilibili(shared)
        frame = frame.iloc[:limit] if limit else frame
        tax_path = out / "taxonomy.yaml"
        tax_path.write_bytes(Path(source).read_bytes())
        write_dump(frame, out / "dump", DAY)
        return out / "dump", tax_path, len(frame)
    rows, tax = read_set(name, shared)
    rows = rows[:limit] if limit else rows
    tax_path = out / "taxonomy.yaml"
    tax_path.write_text(yaml.safe_dump(tax, allow_unicode=True, sort_keys=False), encoding="utf-8")
    Taxonomy.load(tax_path)  # validates
    frame = pd.DataFrame({
        "video_id": [r[0] for r in rows],
        "title": [r[1] for r in rows],
        "description": pd.Series([r[2] for r in rows], dtype=object),
        "uploader_id": pd.Series([None] * len(rows), dtype=object),
        "upload_ts": pd.Series([pd.NaT] * len(rows), dtype="datetime64[us, UTC]"),
        "labels": [[r[3]] for r in rows],
    })
    write_dump(frame, out / "dump", DAY)
    return out / "dump", tax_path, len(frame)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", required=True, choices=SETS)
    ap.add_argument("--out", required=True, type=Path, help="folder for dump/ and taxonomy.yaml")
    ap.add_argument("--shared", type=Path, default=SHARED_DATA, help="the shared data folder (zh_titles, taxonomy)")
    ap.add_argument("--jsonl", type=Path, help="--set bilibili: a Bilibili JSONL file (default: the shared one)")
    ap.add_argument("--tz", default=BILIBILI_TZ, help=f"--set bilibili: the time zone of the days (default {BILIBILI_TZ})")
    args = ap.parse_args(argv)
    if (args.jsonl or args.tz != BILIBILI_TZ) and args.set != "bilibili":
        ap.error("--jsonl and --tz go with --set bilibili")
    if args.set != "bilibili":
        dump, tax, n = write_set(args.set, args.out, args.shared)
        print(f"{args.set}: {n} rows -> {dump}; taxonomy {tax}")
        return 0
    try:
        dump, tax, row_days, unknown = write_bilibili(
            args.jsonl or args.shared / "zh_titles" / "bilibili_popular_2023" / "videos.jsonl", args.out, tz=args.tz)
    except (ValueError, OSError) as e:
        raise SystemExit(f"public_titles.py: {e}") from e
    days = sorted(set(row_days))
    print(f"bilibili: {len(row_days)} rows ({unknown} without a tid of the taxonomy: vtag train drops them, vtag "
          f"evaluate tags them unscored) -> {dump}, {len(days)} days "
          f"{days[0]} .. {days[-1]}; taxonomy {tax}")
    try:
        last, first, share = day_cut(row_days)
        print(f"the latest {share:.0%} of the rows by day: train with --dates ..{last}, evaluate with --dates {first}..")
    except ValueError as e:
        print(f"no day split: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
