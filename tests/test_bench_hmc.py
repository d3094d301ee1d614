"""Smoke test of bench/hmc.py on a tiny generated Clus ARFF data set (tree, no valid file)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _write_arff(path: Path, rows: list[tuple[list[float], str]]) -> None:
    lines = ["@RELATION gen", "@ATTRIBUTE a numeric", "@ATTRIBUTE b numeric", "@ATTRIBUTE c {x,y}",
             "@ATTRIBUTE class hierarchical 1,1/1,1/2,2,2/1,2/1/1", "@DATA"]
    for (a, b, c), lab in rows:
        lines.append(f"{a if a == a else '?'},{b},{c},{lab}")
    path.write_text("\n".join(lines) + "\n")


def _rows(rng, n):
    out = []
    for _ in range(n):
        a, b = rng.normal(size=2)
        lab = ("1/1" if b > 0 else "1/2") if a > 0 else ("2/1/1" if b > 0 else "2")
        out.append(([float("nan") if rng.random() < 0.1 else a, round(b, 3), "x" if a > 0 else "y"], lab))
    return out


def _dataset(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    d = tmp_path / "gen_others"
    d.mkdir()
    _write_arff(d / "gen_train.arff", _rows(rng, 80))
    _write_arff(d / "gen_test.arff", _rows(rng, 40))
    return d


@pytest.mark.slow
def test_hmc_bench_runs_and_prints_one_json_line(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "bench"))
    import hmc

    d = _dataset(tmp_path)
    rc = hmc.main(["--data", str(d), "--seeds", "2", "--heads", "dhmcn_v1,dhmcn_v3+mc",
                   "--max-epochs", "4", "--patience", "2", "--hidden", "16", "--widths", "1,2", "--json-out", str(tmp_path / "r.json")])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    res = json.loads(last)
    assert res["dataset"] == "gen_others"
    for head in ("dhmcn_v1", "dhmcn_v3+mc"):
        assert set(res[head]) == {"auprc_mean", "auprc_std"}
        assert 0.0 < res[head]["auprc_mean"] <= 1.0
    full = json.loads((tmp_path / "r.json").read_text())[0]
    assert full["dhmcn_v1"]["n_seeds"] == 2 and 1 <= full["dhmcn_v1"]["epochs"] <= 4
    # the easy signal is learnt: well above the positive rate of the 5 classes
    assert full["dhmcn_v1"]["auprc_mean"] > 0.5


@pytest.mark.slow
def test_hmc_bench_heads_in_parallel_workers(tmp_path, capsys):
    """--workers 2 on one data set: its heads run as separate tasks in two spawned processes, and
    the data set is reported once, with every head, after the last one."""
    sys.path.insert(0, str(REPO / "bench"))
    import hmc

    d = _dataset(tmp_path)
    heads = ["dhmcn_v1", "dhmcn_v2", "dhmcn_v3+mc"]
    rc = hmc.main(["--data", str(d), "--seeds", "1", "--heads", ",".join(heads), "--workers", "2",
                   "--max-epochs", "2", "--patience", "1", "--hidden", "16", "--widths", "1",
                   "--json-out", str(tmp_path / "r.json")])
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    last = json.loads(out[-1])
    assert last["dataset"] == "gen_others" and set(last) == {"dataset", *heads}
    assert sum(line.startswith("{") for line in out) == 2  # done(...) once, and the closing line
    full = json.loads((tmp_path / "r.json").read_text())
    assert len(full) == 1
    r = full[0]
    for head in heads:
        assert r[head]["n_seeds"] == 1 and 1 <= r[head]["epochs"] <= 2
        assert 0.0 < r[head]["auprc_mean"] <= 1.0
    assert {"seconds", "cpu_seconds", "recipe", "published", "device"} <= set(r)
    assert r["seconds"] >= max(r[h]["seconds"] for h in heads)
    assert r["device"] == "cpu"
