"""Bad rows: which rows of a partition are bad and of which kind (the *plan*), and the kinds.

The plan is a pure function of (seed, day, partition, rows, config) on its own random stream, so
the driver computes the manifest's counts without seeing a row, and the task that writes the rows
computes the same plan. Each bad row has exactly one kind; row 0 of a partition is never bad, and
the row a duplicate copies its id from is always a good row of the same partition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: kind -> the quarantine reason code the tagging job gives (jobs/warehouse/reasons.py; docs/generator.md has the table)
KINDS: dict[str, str] = {
    "null_video_id": "null_video_id",
    "duplicate_video_id": "duplicate_video_id",
    "undecodable_cover": "undecodable_cover",
    "empty_title_no_cover": "empty_content",
    "overlong_field": "overlong",
    "invalid_utf8": "invalid_utf8",
    "wrong_types": "wrong_type",
}
JSONL_ONLY = ("invalid_utf8", "wrong_types")
BAD_STREAM = 0xBAD


def kinds_for(fmt: str, weights: dict[str, float]) -> tuple[list[str], np.ndarray]:
    kinds = [k for k in KINDS if float(weights.get(k, 0.0)) > 0 and (fmt == "jsonl" or k not in JSONL_ONLY)]
    p = np.array([float(weights[k]) for k in kinds], dtype=np.float64)
    return kinds, (p / p.sum() if len(kinds) else p)


@dataclass
class Plan:
    index: np.ndarray  # row indices (sorted) of bad rows in the partition
    kind: list[str]  # kind of each
    dup_source: dict[int, int]  # duplicate row -> good row whose id it reuses
    big: set[int]  # overlong rows that carry the 1 MiB title (the others: a long description/title)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in self.kind:
            out[k] = out.get(k, 0) + 1
        return out

    def by_row(self) -> dict[int, str]:
        return dict(zip(self.index.tolist(), self.kind))


def make_plan(seed: int, day_ord: int, part: int, n_rows: int, bad_rate: float, fmt: str, bad_conf: dict) -> Plan:
    rng = np.random.default_rng([int(seed), int(day_ord), int(part), BAD_STREAM])
    kinds, p = kinds_for(fmt, bad_conf["weights"])
    if bad_rate <= 0 or n_rows < 2 or not kinds:
        return Plan(np.zeros(0, np.int64), [], {}, set())
    u = rng.random(n_rows)
    u[0] = 1.0
    idx = np.flatnonzero(u < bad_rate)
    ks = [kinds[int(i)] for i in rng.choice(len(kinds), size=len(idx), p=p)] if len(idx) else []
    bad_set = set(idx.tolist())
    dup: dict[int, int] = {}
    for i, k in zip(idx.tolist(), ks):
        if k == "duplicate_video_id":
            j = int(rng.integers(0, i))
            while j in bad_set:
                j -= 1
            if j < 0:
                j = 0
            dup[i] = j
    over = [i for i, k in zip(idx.tolist(), ks) if k == "overlong_field"]
    big = set(over[: int(bad_conf["big_title_per_partition"])])
    return Plan(idx, ks, dup, big)


def big_text(base: str, n_bytes: int) -> str:
    """A title of at least ``n_bytes`` UTF-8 bytes, made by repeating ``base``."""
    unit = (base or "超长标题") + " "
    reps = n_bytes // max(len(unit.encode("utf-8")), 1) + 1
    return unit * reps
