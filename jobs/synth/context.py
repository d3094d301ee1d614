"""Upload context: the uploader (with category habits), the source program, duration, upload time.

- An uploader uploads in 1–3 *habit subtrees* (level-2 nodes; most within one level-1 subtree).
  A video of a leaf is uploaded, with probability ``context.habit_rate``, by an uploader whose
  habits include the leaf's level-2 subtree (weighted by the uploader's activity), else by anyone.
- Source programs: each level-1 subtree has two programs of its own (``<name>助手`` ...), each
  uploader a favourite generic editing app; or null.
- Durations: log-normal around a median that depends on the level-1 and level-2 subtree.
- Upload times: a diurnal profile (evening peak) inside the day, UTC.
"""

from __future__ import annotations

import numpy as np

from vtag.jobs.synth.extras import GENERIC_PROGRAMS
from vtag.jobs.synth.world import World

# hourly weights (UTC+8 evening peak shifted to UTC)
_HOURLY = np.array([6, 7, 8, 9, 10, 11, 12, 12, 10, 8, 6, 5, 6, 7, 4, 2, 1, 1, 1, 1, 2, 3, 4, 5], dtype=np.float64)
_HOURLY /= _HOURLY.sum()


class ContextMaker:
    def __init__(self, world: World):
        self.w = world
        c = world.conf["context"]
        self.habit_rate = float(c["habit_rate"])
        self.p_specific = float(c["program_specific_rate"])
        self.p_generic = float(c["program_generic_rate"])
        self.dur_sigma = float(c["duration"]["sigma"])
        self.dur_null = float(c["duration"]["null_rate"])

    def uploader(self, rng: np.random.Generator, k: int) -> int:
        w = self.w
        h = int(w.habit_of[k])
        cdf = w.h_cdf[h]
        if len(cdf) and rng.random() < self.habit_rate:
            return int(w.h_members[h][min(int(np.searchsorted(cdf, rng.random())), len(cdf) - 1)])
        return min(int(np.searchsorted(w.all_cdf, rng.random())), len(w.all_cdf) - 1)

    def program(self, rng: np.random.Generator, k: int, u: int) -> str | None:
        r = rng.random()
        if r < self.p_specific:
            progs = self.w.l1_programs[self.w.l1_of[self.w.leaf_ids[k]]]
            return progs[int(rng.integers(len(progs)))]
        if r < self.p_specific + self.p_generic:
            return GENERIC_PROGRAMS[int(self.w.uploader_program[u])]
        return None

    def duration(self, rng: np.random.Generator, k: int) -> int | None:
        if rng.random() < self.dur_null:
            return None
        d = self.w.dur_median[k] * float(np.exp(rng.normal(0, self.dur_sigma)))
        return int(min(max(round(d), 3), 7200))

    def upload_us(self, rng: np.random.Generator, day_start_us: int) -> int:
        hour = int(rng.choice(24, p=_HOURLY))
        return day_start_us + (hour * 3600 + int(rng.integers(3600))) * 1_000_000 + int(rng.integers(1_000_000))
