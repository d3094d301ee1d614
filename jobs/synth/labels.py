"""Labels: the true leaf (Zipf-like), label noise, and constraint-consistent extra tags.

``labels[0]`` is the primary leaf (the recorded one: with probability ``labels.noise_rate`` it is
a wrong leaf — a sibling for ``noise_sibling_share`` of them, else any leaf — while the content
follows the true leaf). Extra tags come from ``cooccur`` partners of the primary's closure
(accepted with probability ``strength * cooccur_scale``) and from ``requires`` (always). An extra
is taken only when its closure (itself, its ancestors, what it requires) shares no ``exclusive``
group with what is already implied, so the label set never breaks a constraint. Ancestors are
implicit and not listed.
"""

from __future__ import annotations

import numpy as np

from vtag.jobs.synth.world import World


class LabelMaker:
    def __init__(self, world: World):
        self.w = world
        lab = world.conf["labels"]
        self.noise = float(lab["noise_rate"])
        self.sib_share = float(lab["noise_sibling_share"])
        self.scale = float(lab["cooccur_scale"])
        self.max_extra = int(lab["max_extra"])
        tax = world.tax
        self.sib_leaves: list[np.ndarray] = []
        for lid in world.leaf_ids:
            parent = tax.by_id[lid].parent
            sibs = [world.leaf_pos[c] for c in tax.children(parent) if c != lid and c in world.leaf_pos]
            self.sib_leaves.append(np.asarray(sibs, dtype=np.int64))
        self.anc_sets = {}

    def true_leaves(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` leaf positions drawn from the Zipf-like leaf frequencies."""
        return np.minimum(np.searchsorted(self.w.leaf_cdf, rng.random(n)), len(self.w.leaf_ids) - 1)

    def noisy(self, rng: np.random.Generator, k: int) -> int:
        if rng.random() >= self.noise:
            return k
        sibs = self.sib_leaves[k]
        if len(sibs) and rng.random() < self.sib_share:
            return int(sibs[int(rng.integers(len(sibs)))])
        j = int(rng.integers(len(self.w.leaf_ids) - 1))
        return j + 1 if j >= k else j

    def extras(self, rng: np.random.Generator, k: int) -> list[str]:
        """Extra tag ids for primary leaf position ``k`` (requires first, then cooccur draws)."""
        w = self.w
        tax = w.tax
        leaf = int(w.leaf_index[k])
        clo, exc = w.closure, w.exclusive
        implied = clo[leaf].copy()
        listed = [leaf]
        cands: list[tuple[int, float]] = []
        for a in np.flatnonzero(implied):
            cands.extend(w.cooccur_partners.get(int(a), ()))
        order = rng.permutation(len(cands)) if cands else []
        for i in order:
            j, s = cands[int(i)]
            if len(listed) - 1 >= self.max_extra:
                break
            if implied[j] or rng.random() >= s * self.scale:
                continue
            cj = clo[j]
            if (exc[np.ix_(cj, implied)]).any():
                continue
            implied |= cj
            listed.append(j)
        # make explicit what requires brings in (not plain ancestors of a listed node)
        anc_of_listed = np.zeros_like(implied)
        for j in listed:
            anc_of_listed[tax.path_matrix[j][tax.path_matrix[j] >= 0]] = True
        req_only = implied & ~anc_of_listed
        for j in np.flatnonzero(req_only):
            # keep the deepest: skip a node that is an ancestor of another required node
            if not any(j in tax.path_matrix[m] for m in np.flatnonzero(req_only) if m != j):
                listed.append(int(j))
        return [tax.ids[j] for j in listed[1:]]
