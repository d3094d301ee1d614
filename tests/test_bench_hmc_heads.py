"""bench/hmc_heads.py: the per-head time budget and the binned AU(PRC)."""

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_seeds_stop_before_they_would_overrun_the_budget():
    sys.path.insert(0, str(REPO / "bench"))
    import hmc_heads

    now = [0.0]

    def run_one(s):  # each seed costs 10 clock seconds
        now[0] += 10.0
        return float(s)

    def clock():
        return now[0]

    # at 20 s the third seed would end at 30 > 25: skipped (before: started, and overran by 5 s)
    assert hmc_heads.seeds_within_budget(run_one, 5, 25.0, clock) == [0.0, 1.0]
    now[0] = 0.0
    assert hmc_heads.seeds_within_budget(run_one, 5, 1.0, clock) == [0.0]  # the first always runs
    now[0] = 0.0
    assert hmc_heads.seeds_within_budget(run_one, 3, None, clock) == [0.0, 1.0, 2.0]
    now[0] = 0.0
    assert hmc_heads.seeds_within_budget(run_one, 5, 30.0, clock) == [0.0, 1.0, 2.0]  # ends exactly at 30


def test_head_budget():
    sys.path.insert(0, str(REPO / "bench"))
    import hmc_heads

    assert hmc_heads.head_budget_s(10, 4, 2) == pytest.approx(300.0)  # 2 heads at a time: 5 CPU minutes each
    assert hmc_heads.head_budget_s(10, 4, 8) == pytest.approx(600.0)  # W = min(workers, heads)
    assert hmc_heads.head_budget_s(10, 1, 2) == pytest.approx(600.0)
    assert hmc_heads.head_budget_s(None, 4, 2) is None and hmc_heads.head_budget_s(0, 4, 2) is None


def test_auprc_binned_close_to_exact():
    sys.path.insert(0, str(REPO / "bench"))
    import hmc_heads

    rng = np.random.default_rng(1)
    Y = rng.random((200, 30)) < 0.2
    S = np.clip(Y * 0.3 + rng.random(Y.shape) * 0.7, 0, 1).astype(np.float32)
    mask = np.ones(30, dtype=bool)
    mask[0] = False
    assert hmc_heads.auprc_binned(Y, S, mask) == pytest.approx(hmc_heads.auprc(Y, S, mask), abs=2e-3)
