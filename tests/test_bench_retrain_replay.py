"""bench/retrain_replay.py: the periods, and the replay of static vs weekly retraining through
``vtag train`` / ``vtag promote`` / ``vtag evaluate`` on a small labeled dump."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import retrain_replay  # noqa: E402


def test_periods_are_calendar_cuts_from_the_first_day():
    days = ["2024-05-01", "2024-05-02", "2024-05-04", "2024-05-08", "2024-05-09", "2024-05-15"]
    assert retrain_replay.periods_of(days, 7) == [["2024-05-01", "2024-05-02", "2024-05-04"],
                                                  ["2024-05-08", "2024-05-09"], ["2024-05-15"]]
    # a period without a day is left out, and the order of the input does not matter
    assert retrain_replay.periods_of(list(reversed(days)), 3) == [
        ["2024-05-01", "2024-05-02"], ["2024-05-04"], ["2024-05-08", "2024-05-09"], ["2024-05-15"]]
    with pytest.raises(ValueError):
        retrain_replay.periods_of(days, 0)


@pytest.mark.slow
def test_replay_scores_three_strategies_on_the_later_periods(tmp_path, capsys):
    from tests.builders import TINY_CONFIG, tiny_taxonomy
    from vtag.models.data import toy_labeled_frame, write_dump

    tax = tiny_taxonomy()
    days = [f"2024-05-{d:02d}" for d in range(1, 9)]
    frame = toy_labeled_frame(tax, n=30 * len(days), seed=7)
    for k, day in enumerate(days):
        part = frame.iloc[30 * k: 30 * (k + 1)].copy()
        part["upload_ts"] = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(range(30), unit="min")
        write_dump(part, tmp_path / "dump", day)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG), encoding="utf-8")
    argv = ["--data", str(tmp_path / "dump"), "--taxonomy", str(tax.source), "--config", str(config),
            "--period-days", "2", "--initial-periods", "1", "--holdout-days", "1", "--epochs", "1", "--threads", "1",
            "--work", str(tmp_path / "work"), "--md-out", str(tmp_path / "r.md"), "--json-out", str(tmp_path / "r.json")]
    assert retrain_replay.main(argv) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    # 4 periods of 2 days; the first bundle trains on period 0 (up to 05-02); periods 2 and 3 are scored
    assert report["periods"] == 4 and [r["period"] for r in report["rows"]] == [2, 3]
    r2, r3 = report["rows"]
    assert r2["static"]["bundle"] == r3["static"]["bundle"] == "B-2024-05-02"
    assert r2["unchecked"]["bundle"] == "B-2024-05-04" and r3["unchecked"]["bundle"] == "B-2024-05-06"
    # the check at the end of period 1 (05-03..05-04): trained up to 05-03, scored on 05-04 against the link's
    first, second, third = report["decisions"]
    assert first["decision"] == "promoted" and first["from"] is None and first["candidate"].endswith("B-2024-05-02")
    assert second["candidate"].endswith("B-2024-05-03") and second["dates"] == "2024-05-04..2024-05-04"
    assert third["candidate"].endswith("B-2024-05-05") and third["dates"] == "2024-05-06..2024-05-06"
    for d in (second, third):
        assert (d["decision"] == "promoted") == all(g >= 0 for g in d["gains"].values())
    after_second = "B-2024-05-03" if second["decision"] == "promoted" else "B-2024-05-02"
    assert r2["checked"]["bundle"] == after_second
    assert r3["checked"]["bundle"] == ("B-2024-05-05" if third["decision"] == "promoted" else after_second)
    assert all(r[s]["n"] == 60 for r in report["rows"] for s in ("static", "checked", "unchecked"))
    pooled = report["pooled"]["static"]["leaf_acc"]
    assert pooled == pytest.approx((r2["static"]["leaf_acc"] + r3["static"]["leaf_acc"]) / 2)
    assert "| pooled |" in (tmp_path / "r.md").read_text() and sorted(report["train_seconds"]) == [
        f"2024-05-0{d}" for d in range(2, 7)]

    # a rerun in the same --work reuses the bundles and starts the link and its log afresh
    assert retrain_replay.main([*argv, "--reuse", "--json-out", str(tmp_path / "r2.json")]) == 0
    again = json.loads((tmp_path / "r2.json").read_text())
    assert again["train_seconds"] == {} and again["rows"] == report["rows"]
    assert [d["candidate"] for d in again["decisions"]] == [d["candidate"] for d in report["decisions"]]


def test_sample_dump_keeps_a_seeded_share_of_every_day(tmp_path):
    from tests.builders import tiny_taxonomy
    from vtag.models.data import read_dumps, toy_labeled_frame, write_dump

    frame = toy_labeled_frame(tiny_taxonomy(), n=80, seed=2)
    write_dump(frame.iloc[:40], tmp_path / "full", "2024-05-01")
    write_dump(frame.iloc[40:], tmp_path / "full", "2024-05-02")
    root = retrain_replay.sample_dump(str(tmp_path / "full"), tmp_path / "s1", 0.25, seed=0)
    sample = read_dumps(root)
    assert sample.groupby("dt").size().to_dict() == {"2024-05-01": 10, "2024-05-02": 10}
    assert set(sample["video_id"]) <= set(frame["video_id"])
    again = read_dumps(retrain_replay.sample_dump(str(tmp_path / "full"), tmp_path / "s2", 0.25, seed=0))
    assert sorted(again["video_id"]) == sorted(sample["video_id"])  # seeded
    with pytest.raises(SystemExit, match="label-fraction"):
        retrain_replay.sample_dump(str(tmp_path / "full"), tmp_path / "s3", 0.0, seed=0)
