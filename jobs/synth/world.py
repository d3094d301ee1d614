"""The generator's world: everything fixed for one (taxonomy, config, seed).

Built once per Python process (driver or Spark worker) and cached; it holds only taxonomy-sized
data (leaf frequencies, sibling sets, cover signatures, the uploader population), never rows.

Sibling sets (documented in docs/generator.md): among the parents that have at least two leaf
children, a hash of the parent id (not the seed, so the sets are stable) picks

- **text-blind** parents (``sets.text_blind_rate``): titles and descriptions of their leaf children
  use only the vocabulary of the parent and above, so text cannot separate these siblings; their
  covers carry a per-leaf accent colour and icon, so the cover can;
- **cover-blind** parents (``sets.cover_blind_rate``): their leaf children share the parent's cover
  signature (same distribution of images), while their titles use leaf words.
"""

from __future__ import annotations

import colorsys
import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vtag.hierarchy.taxonomy import Taxonomy
from vtag.jobs.synth.config import config_hash, resolve_shared_data
from vtag.jobs.synth.extras import GENERIC_PROGRAMS, PROGRAM_SUFFIXES
from vtag.jobs.synth.lexicon import Lexicon, build_lexicon
from vtag.jobs.synth.shared import load_seeds

log = logging.getLogger("vtag.generate")

_CACHE: dict[str, World] = {}
_LOCK = threading.Lock()


def hash01(*parts) -> float:
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


@dataclass
class CoverSig:
    """A cover's visual signature: level-1 palette, level-2 layout and shapes, leaf accent and icon."""

    bg1: tuple[int, int, int]
    bg2: tuple[int, int, int]
    layout: int  # 0..5: where the text band and the shapes go
    shape: int  # 0..5: circles, boxes, triangles, stripes, rings, stars
    accent: tuple[int, int, int]
    accent2: tuple[int, int, int]
    icon: int  # polygon sides of the corner icon, 3..8


def sibling_sets(tax: Taxonomy, conf: dict) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(text-blind, cover-blind) parents -> their leaf children. Depends on the taxonomy and the
    ``sets`` rates only (a hash of the parent id decides), not on the seed."""
    s = conf["sets"]
    r1, r2 = float(s["text_blind_rate"]), float(s["cover_blind_rate"])
    tb: dict[str, list[str]] = {}
    cb: dict[str, list[str]] = {}
    for n in tax.nodes:
        kids = [c for c in n.children if tax.by_id[c].is_leaf]
        if len(kids) < 2:
            continue
        u = hash01("sibling-set", n.id)
        if u < r1:
            tb[n.id] = kids
        elif u < r1 + r2:
            cb[n.id] = kids
    return tb, cb


def sets_markdown(tax: Taxonomy, conf: dict) -> str:
    """The sibling sets as a Markdown table (for docs/generator.md)."""
    tb, cb = sibling_sets(tax, conf)
    lines = ["| set | parent | leaves (Chinese names) |", "|---|---|---|"]
    for label, sets in (("text-blind", tb), ("cover-blind", cb)):
        for p, kids in sets.items():
            names = "、".join(tax.by_id[k].name for k in kids)
            lines.append(f"| {label} | `{p}` {' / '.join(tax.path_names(p))} | {names} |")
    return "\n".join(lines)


class World:
    def __init__(self, tax: Taxonomy, conf: dict, seed: int, lex: Lexicon):
        self.tax, self.conf, self.seed, self.lex = tax, conf, int(seed), lex
        rng = np.random.default_rng([self.seed, 0x5EED])
        self.leaf_ids: tuple[str, ...] = tax.leaf_ids
        self.leaf_pos = {lid: k for k, lid in enumerate(self.leaf_ids)}
        nl = len(self.leaf_ids)
        lab = conf["labels"]
        # Zipf-Mandelbrot leaf frequencies over a seeded order of the leaves
        order = rng.permutation(nl)
        w = np.empty(nl)
        w[order] = 1.0 / (np.arange(nl) + 1.0 + float(lab["zipf_q"])) ** float(lab["zipf_s"])
        self.leaf_prob = w / w.sum()
        self.leaf_cdf = np.cumsum(self.leaf_prob)
        self.l1_of = {n.id: tax.path(n.id)[0] for n in tax.nodes}
        self._sibling_sets()
        self._covers(rng)
        self._context(rng)
        self._label_tables()

    # ------------------------------------------------------------------ sibling sets
    def _sibling_sets(self) -> None:
        tb, cb = sibling_sets(self.tax, self.conf)
        self.text_blind_parents, self.cover_blind_parents = list(tb), list(cb)
        tbl = {lf for kids in tb.values() for lf in kids}
        cbl = {lf for kids in cb.values() for lf in kids}
        self.text_blind = np.array([lf in tbl for lf in self.leaf_ids], dtype=bool)
        self.cover_blind = np.array([lf in cbl for lf in self.leaf_ids], dtype=bool)

    def sibling_sets(self) -> dict[str, dict[str, list[str]]]:
        """``{"text_blind": {parent: [leaf, ...]}, "cover_blind": {...}}`` (leaf children only)."""
        tb, cb = sibling_sets(self.tax, self.conf)
        return {"text_blind": tb, "cover_blind": cb}

    # ------------------------------------------------------------------ covers
    def _covers(self, rng: np.random.Generator) -> None:
        tax = self.tax
        l1 = list(tax.children(None))
        hue0 = float(rng.random())
        self.l1_hue = {nid: (hue0 + k * 0.6180339887) % 1.0 for k, nid in enumerate(l1)}
        self.sig: dict[str, CoverSig] = {}

        def sib_index(nid: str) -> tuple[int, int]:
            node = tax.by_id[nid]
            sibs = tax.children(node.parent)
            return sibs.index(nid), len(sibs)

        for lid in self.leaf_ids:
            path = tax.path(lid)
            h = self.l1_hue[path[0]]
            l2 = path[1] if len(path) > 1 else path[0]
            j, _ = sib_index(l2)
            j2 = int(hash01("shape", self.seed, l2) * 6)
            node = tax.by_id[lid]
            carrier = lid
            if self.cover_blind[self.leaf_pos[lid]] and node.parent is not None:
                carrier = node.parent
            k, kn = sib_index(carrier)
            # the accent separates siblings (evenly spread hues); accent2 and the icon follow the parent
            ah = h + 0.25 + 0.5 * (k + 0.5) / max(kn, 1)
            pk, _ = sib_index(node.parent) if node.parent is not None else (0, 1)
            s1 = 0.45 + 0.3 * hash01("sat", self.seed, path[0])
            self.sig[lid] = CoverSig(
                bg1=_rgb(h, s1, 0.88),
                bg2=_rgb(h + 0.07, s1 + 0.2, 0.42),
                layout=j % 6,
                shape=(j2 + j // 6) % 6,
                accent=_rgb(ah, 0.9, 0.95),
                accent2=_rgb(h + 0.5, 0.35 + 0.5 * ((pk % 3) / 2), 0.35 + 0.6 * ((pk // 3) % 2)),
                icon=3 + ((k + pk) % 6),
            )

    # ------------------------------------------------------------------ context
    def _context(self, rng: np.random.Generator) -> None:
        tax, c = self.tax, self.conf["context"]
        # habit node of a leaf: its level-2 ancestor (level-1 for leaves at level 2)
        habit_nodes: list[str] = []
        habit_of = np.empty(len(self.leaf_ids), dtype=np.int64)
        hidx: dict[str, int] = {}
        for k, lid in enumerate(self.leaf_ids):
            path = tax.path(lid)
            hn = path[1] if len(path) > 2 else path[0]
            if hn not in hidx:
                hidx[hn] = len(habit_nodes)
                habit_nodes.append(hn)
            habit_of[k] = hidx[hn]
        self.habit_nodes, self.habit_of = habit_nodes, habit_of
        nh = len(habit_nodes)
        hw = np.bincount(habit_of, weights=self.leaf_prob, minlength=nh)
        h_l1 = np.array([self.l1_of[h] for h in habit_nodes])
        nu = int(c["uploaders"])
        self.uploader_ids = [
            "up" + hashlib.blake2b(f"{self.seed}:{u}".encode(), digest_size=5).hexdigest() for u in range(nu)
        ]
        activity = (rng.pareto(float(c["activity_alpha"]), nu) + 1.0).astype(np.float64)
        kprobs = np.asarray(c["subtrees_per_uploader"], dtype=np.float64)
        ks = rng.choice(len(kprobs), size=nu, p=kprobs / kprobs.sum()) + 1
        members: list[list[int]] = [[] for _ in range(nh)]
        p_h = hw / hw.sum()
        for u in range(nu):
            first = int(rng.choice(nh, p=p_h))
            chosen = [first]
            for _ in range(int(ks[u]) - 1):
                same = np.flatnonzero(h_l1 == h_l1[first])
                pool = same if (rng.random() < float(c["same_l1_share"]) and len(same) > 1) else np.arange(nh)
                pw = hw[pool] / hw[pool].sum()
                chosen.append(int(rng.choice(pool, p=pw)))
            for h in dict.fromkeys(chosen):
                members[h].append(u)
        self.h_members = [np.asarray(m, dtype=np.int64) for m in members]
        self.h_cdf = []
        for m in self.h_members:
            if len(m):
                cw = np.cumsum(activity[m])
                self.h_cdf.append(cw / cw[-1])
            else:
                self.h_cdf.append(np.zeros(0))
        self.all_cdf = np.cumsum(activity) / activity.sum()
        # uploader favourite leaf (within the leaf's habit node) for the leaf-level habit
        self.uploader_program = rng.integers(0, len(GENERIC_PROGRAMS), nu)
        # source programs tied to level-1 subtrees
        self.l1_programs: dict[str, list[str]] = {}
        for nid in tax.children(None):
            name = tax.by_id[nid].name
            sfx = rng.choice(len(PROGRAM_SUFFIXES), size=2, replace=False)
            self.l1_programs[nid] = [name + PROGRAM_SUFFIXES[int(s)] for s in sorted(sfx)]
        # category-dependent durations: a median per leaf
        d = self.conf["context"]["duration"]
        l1_med = {nid: float(np.exp(rng.uniform(np.log(d["l1_median_min"]), np.log(d["l1_median_max"]))))
                  for nid in tax.children(None)}
        l2_mult = {n.id: float(np.exp(rng.normal(0, 0.35))) for n in tax.nodes if n.level == 2}
        self.dur_median = np.array(
            [l1_med[tax.path(lf)[0]] * (l2_mult.get(tax.path(lf)[1], 1.0) if len(tax.path(lf)) > 1 else 1.0)
             * float(np.exp(rng.normal(0, 0.2))) for lf in self.leaf_ids]
        )

    # ------------------------------------------------------------------ labels
    def _label_tables(self) -> None:
        tax = self.tax
        self.closure = tax.closure_matrix
        self.exclusive = tax.exclusive_matrix
        partners: dict[int, list[tuple[int, float]]] = {}
        for a, b, s in tax.constraints.cooccur:
            ia, ib = tax.index[a], tax.index[b]
            partners.setdefault(ia, []).append((ib, s))
            partners.setdefault(ib, []).append((ia, s))
        self.cooccur_partners = {k: sorted(v) for k, v in partners.items()}
        # node indices of the implicit ancestors of each node (for the "no ancestors listed" rule)
        self.leaf_index = np.array([tax.index[lf] for lf in self.leaf_ids], dtype=np.int64)


_LEX_CACHE: dict[tuple, Lexicon] = {}


def _lexicon(tax_text: str, tax: Taxonomy, conf: dict) -> Lexicon:
    """The lexicon depends only on the taxonomy and the seeds (not on the other knobs): cached."""
    shared = resolve_shared_data(conf)
    use = bool(conf["text"].get("use_shared_data", True))
    key = (hashlib.sha256(tax_text.encode("utf-8")).hexdigest(), str(shared), use)
    lex = _LEX_CACHE.get(key)
    if lex is None:
        seeds = load_seeds(shared if use else Path("/nonexistent"))
        if not seeds.found:
            log.warning("shared data not found at %s (or disabled): using reduced lexicons "
                        "(taxonomy names + curated extras)", shared)
        lex = build_lexicon(tax, seeds)
        if len(_LEX_CACHE) >= 3:
            _LEX_CACHE.pop(next(iter(_LEX_CACHE)))
        _LEX_CACHE[key] = lex
    return lex


def world_key(tax_text: str, conf: dict, seed: int) -> str:
    return hashlib.sha256(f"{tax_text}\x00{config_hash(conf)}\x00{seed}".encode()).hexdigest()[:24]


def get_world(tax_text: str, conf: dict, seed: int, source: str = "<generate>") -> World:
    """The cached world for (taxonomy YAML text, config, seed); built on first use in a process."""
    key = world_key(tax_text, conf, seed)
    with _LOCK:
        w = _CACHE.get(key)
        if w is None:
            import yaml

            tax = Taxonomy.from_dict(yaml.safe_load(tax_text), source=source)
            lex = _lexicon(tax_text, tax, conf)
            w = World(tax, conf, seed, lex)
            import gc

            from vtag.jobs.synth.memory import release_memory

            gc.collect()
            release_memory()
            while len(_CACHE) >= 3:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = w
        return w
