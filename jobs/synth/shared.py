"""Real-data seeds for the lexicons, read at generation time from the shared data folder.

Nothing here is copied into the repository. Every reader tolerates a missing file; when the whole
folder is absent, :func:`load_seeds` returns empty seeds and the generator logs that it works with
reduced lexicons (taxonomy names + curated extras only).

Used files (see their READMEs under ``<shared>/``):
- ``taxonomy/baidu_videotag/label_3396.txt``: 3,396 Chinese video tags (synonym/entity candidates);
- ``zh_titles/bilibili_popular_2023/videos.jsonl``: real UGC titles with a 2-level zone;
- ``zh_titles/tnews_clue/*.json``: news titles with keyword lists;
- ``zh_titles/nlpcc2017_headlines/test_full.word.tsv``: jieba-segmented headlines.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

_CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass
class Seeds:
    """Real-data seeds. ``docs``: segmented titles (token lists) for co-occurrence; ``zone_titles``:
    zone name -> real UGC titles; ``tags``: the Baidu tag vocabulary."""

    found: bool = False
    root: str = ""
    tags: list[str] = field(default_factory=list)
    docs: list[list[str]] = field(default_factory=list)
    zone_titles: dict[str, list[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def _read_lines(p: Path) -> list[str]:
    try:
        return p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def load_seeds(root: Path, max_docs: int = 60000) -> Seeds:
    """Read what exists under ``root``; deterministic (file order, line order)."""
    seeds = Seeds(root=str(root))
    if not root.is_dir():
        return seeds
    tag_file = root / "taxonomy" / "baidu_videotag" / "label_3396.txt"
    tags = [t.strip() for t in _read_lines(tag_file) if t.strip()]
    if tags:
        seen: dict[str, None] = {}
        for t in tags:
            seen.setdefault(t, None)
        seeds.tags = list(seen)
        seeds.files.append(str(tag_file))
    bili = root / "zh_titles" / "bilibili_popular_2023" / "videos.jsonl"
    zone: dict[str, list[str]] = {}
    for line in _read_lines(bili):
        try:
            d = json.loads(line)
        except ValueError:
            continue
        title = str(d.get("title") or "").strip()
        if not title or len(title) > 80:
            continue
        for z in (d.get("parent_name"), d.get("tname")):
            if z:
                zone.setdefault(str(z), []).append(title)
    if zone:
        seeds.zone_titles = zone
        seeds.files.append(str(bili))
    docs: list[list[str]] = []
    for name in ("dev.json", "test.json"):
        p = root / "zh_titles" / "tnews_clue" / name
        lines = _read_lines(p)
        for line in lines:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            kws = [k for k in str(d.get("keywords") or "").split(",") if k]
            sent = str(d.get("sentence") or "")
            if kws:
                docs.append([sent] + kws)
        if lines:
            seeds.files.append(str(p))
    nl = root / "zh_titles" / "nlpcc2017_headlines" / "test_full.word.tsv"
    lines = _read_lines(nl)
    for line in lines:
        _, _, words = line.partition("\t")
        toks = words.split()
        if toks:
            docs.append(["".join(toks)] + toks)
    if lines:
        seeds.files.append(str(nl))
    seeds.docs = docs[:max_docs]
    seeds.found = bool(seeds.tags or seeds.docs or seeds.zone_titles)
    return seeds


def is_word(tok: str) -> bool:
    """A usable Chinese token: 2-6 chars, mostly CJK."""
    if not (2 <= len(tok) <= 6):
        return False
    return len(_CJK.findall(tok)) >= max(2, len(tok) - 1)
