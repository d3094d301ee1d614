"""Per-node lexicons derived from any taxonomy, optionally enriched from real-data seeds.

A node's words: its Chinese name (and the parts of a compound name such as ``动作/冒险``), curated
extras keyed by its Chinese name or ``name_en`` (:mod:`vtag.jobs.synth.extras`), and Baidu video tags
that contain the name or are contained in it. Its entities: words that co-occur with the name in
real segmented titles (TNEWS keywords, NLPCC headlines). IP terms: Chinese names carried by nodes of
two or more level-1 subtrees (e.g. 漫威 under film and game), plus curated franchise names for
entertainment-like subtrees. Generic titles: real UGC titles (Bilibili) that contain no word of any
node. Everything is sorted so that the result does not depend on hash seeds.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from vtag.hierarchy.taxonomy import Taxonomy
from vtag.jobs.synth.extras import EXTRAS, FACET_NAMES, IP_BEARING, IP_TERMS, ZONE_ALIASES
from vtag.jobs.synth.shared import Seeds, is_word

_SPLIT = re.compile(r"[/／、&＆,，\s·・|｜()（）]+")


class Matcher:
    """Finds which of a fixed set of words occur in a text (first-two-characters index)."""

    def __init__(self, words):
        self.by2: dict[str, list[str]] = {}
        self.single: set[str] = set()
        for w in sorted(set(words), key=lambda x: (-len(x), x)):
            if len(w) == 1:
                self.single.add(w)
            elif len(w) >= 2:
                self.by2.setdefault(w[:2], []).append(w)

    def find(self, text: str) -> list[str]:
        out: list[str] = []
        for i in range(len(text)):
            for w in self.by2.get(text[i : i + 2], ()):
                if text.startswith(w, i):
                    out.append(w)
            if text[i] in self.single:
                out.append(text[i])
        return out


def name_parts(name: str) -> list[str]:
    parts = [p for p in _SPLIT.split(name) if p]
    out = [name] if name not in parts else []
    return out + parts if len(parts) > 1 else [name]


@dataclass
class Lexicon:
    words: dict[str, list[str]]
    entities: dict[str, list[str]]
    ip_terms: list[str]
    ip_shared: dict[str, list[str]]  # derived IP term -> node ids (in >= 2 level-1 subtrees)
    ip_bearing: set[str]  # level-1 ids where IP terms may be mentioned
    zone_titles: dict[str, list[str]]  # node id -> real UGC titles of its zone
    generic_titles: list[str]
    facet: set[str]  # node ids whose name is a facet (weak title word)
    stats: dict = field(default_factory=dict)

    def node_words(self, nid: str) -> list[str]:
        return self.words.get(nid, [])


def build_lexicon(tax: Taxonomy, seeds: Seeds, max_syn: int = 6, max_ent: int = 6) -> Lexicon:
    words: dict[str, list[str]] = {}
    facet: set[str] = set()
    for n in tax.nodes:
        ws = name_parts(n.name)
        for key in (n.name, (n.name_en or "").strip().lower()):
            ws += EXTRAS.get(key, [])
        if n.name in FACET_NAMES or n.name.endswith("类"):
            facet.add(n.id)
        words[n.id] = list(dict.fromkeys(w for w in ws if w))

    # Baidu tags: contain the name (or are contained in a long name)
    if seeds.tags:
        tag_by2: dict[str, list[str]] = {}
        for t in seeds.tags:
            for i in range(len(t) - 1):
                tag_by2.setdefault(t[i : i + 2], []).append(t)
        for n in tax.nodes:
            if n.id in facet or len(n.name) < 2:
                continue
            cands = sorted(set(tag_by2.get(n.name[:2], ())))
            syn = [t for t in cands if t != n.name and n.name in t and len(t) <= len(n.name) + 3]
            syn += [t for t in seeds.tags if len(t) >= 2 and t != n.name and t in n.name and len(n.name) >= 4][:2]
            words[n.id] = list(dict.fromkeys(words[n.id] + syn[:max_syn]))

    # Entities: co-occurring words in real segmented titles
    entities: dict[str, list[str]] = {n.id: [] for n in tax.nodes}
    name_to_nodes: dict[str, list[str]] = {}
    for n in tax.nodes:
        if n.id not in facet and len(n.name) >= 2:
            name_to_nodes.setdefault(n.name, []).append(n.id)
    if seeds.docs and name_to_nodes:
        m = Matcher(name_to_nodes)
        df: Counter = Counter()
        per_name: dict[str, Counter] = {}
        for doc in seeds.docs:
            toks = sorted({t for t in doc[1:] if is_word(t)})
            df.update(toks)
            for hit in sorted(set(m.find(doc[0]))):
                per_name.setdefault(hit, Counter()).update(t for t in toks if t != hit)
        common = {t for t, c in df.items() if c > max(20, 0.004 * len(seeds.docs))}
        for name, cnt in per_name.items():
            ent = [t for t, c in sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0])) if c >= 2 and t not in common]
            for nid in name_to_nodes[name]:
                entities[nid] = ent[:max_ent]

    # IP terms: names shared by nodes of different level-1 subtrees
    l1_of = {n.id: tax.path(n.id)[0] for n in tax.nodes}
    by_name: dict[str, list[str]] = {}
    for n in tax.nodes:
        if n.id not in facet:
            by_name.setdefault(n.name, []).append(n.id)
    ip_shared = {
        name: sorted(ids) for name, ids in sorted(by_name.items()) if len({l1_of[i] for i in ids}) >= 2
    }
    ip_bearing = set(l1_of[i] for ids in ip_shared.values() for i in ids)
    for n in tax.nodes:
        if n.level == 1 and (n.name in IP_BEARING or any(w in (n.name_en or "").lower().split() for w in IP_BEARING)):
            ip_bearing.add(n.id)
    ip_terms = list(dict.fromkeys(list(ip_shared) + IP_TERMS))

    # Real titles: per zone-matched node, and generic ones (no node word at all)
    zone_titles: dict[str, list[str]] = {}
    generic: list[str] = []
    if seeds.zone_titles:
        for n in tax.nodes:
            zones = [n.name] + ZONE_ALIASES.get(n.name, [])
            titles = [t for z in zones for t in seeds.zone_titles.get(z, [])]
            if titles and n.level <= 2:
                zone_titles[n.id] = list(dict.fromkeys(titles))[:600]
        all_words = {w for ws in words.values() for w in ws if len(w) >= 2} | set(ip_terms)
        m = Matcher(all_words)
        seen: set[str] = set()
        for z in sorted(seeds.zone_titles):
            for t in seeds.zone_titles[z]:
                if t not in seen and not m.find(t):
                    seen.add(t)
                    generic.append(t)
        generic = sorted(generic)[:5000]
    stats = {
        "nodes": tax.n_nodes,
        "words": sum(len(v) for v in words.values()),
        "entities": sum(len(v) for v in entities.values()),
        "ip_shared": len(ip_shared),
        "zone_nodes": len(zone_titles),
        "generic_titles": len(generic),
        "seeded": seeds.found,
    }
    return Lexicon(words, entities, ip_terms, ip_shared, ip_bearing, zone_titles, generic, facet, stats)
