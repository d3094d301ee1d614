"""bench/bilibili_sweep.py: config variants × seeds ranked on validation (tiny slice of the shared file)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VTAG_SHARED_DATA", REPO.parent / "shared" / "data"))
VIDEOS = SHARED / "zh_titles" / "bilibili_popular_2023" / "videos.jsonl"
sys.path.insert(0, str(REPO / "bench"))


def test_deep_merge_and_summary():
    import bilibili_sweep as S

    base = {"text": {"bow": {"dim": 64, "buckets": 8}}, "train": {"lr": 1.0}}
    merged = S.deep_merge(base, {"text": {"bow": {"dim": 128}}, "loss": {"leaf_smoothing": 0.1}})
    assert merged == {"text": {"bow": {"dim": 128, "buckets": 8}}, "train": {"lr": 1.0},
                      "loss": {"leaf_smoothing": 0.1}}
    assert base["text"]["bow"]["dim"] == 64  # the base is not changed
    runs = [{"variant": v, "seed": s, "valid_leaf_acc": a, "valid_hf1": a, "leaf_acc": b, "level1_acc": b, "hf1": b}
            for v, s, a, b in [("a", 0, 0.2, 0.9), ("a", 1, 0.4, 0.9), ("b", 0, 0.5, 0.1)]]
    summary = S.summarise(runs, ["a", "b"])
    assert summary["a"]["valid_leaf_acc"] == pytest.approx(0.3) and summary["a"]["runs"] == 2
    table = S.format_summary(summary).splitlines()
    assert table[2].startswith("| b |")  # ranked by validation, not by the (better) test figures of a


def test_bad_variants_file(tmp_path):
    import bilibili_sweep as S

    f = tmp_path / "v.json"
    f.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="expected"):
        S.load_variants(str(f))


@pytest.mark.slow
@pytest.mark.skipif(not VIDEOS.is_file(), reason="shared Bilibili data not present")
def test_sweep_on_a_slice(tmp_path, capsys):
    import bilibili_sweep as S

    with open(VIDEOS, encoding="utf-8") as fh:
        lines = [next(fh) for _ in range(400)]
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(lines[:300]), encoding="utf-8")
    test.write_text("".join(lines[300:]), encoding="utf-8")
    variants = tmp_path / "variants.json"
    variants.write_text(json.dumps({"base": {"train": {"epochs": 1}},
                                    "smooth": {"train": {"epochs": 1}, "loss": {"leaf_smoothing": 0.1}},
                                    "typo": {"train": {"epoch": 1}}}))
    out_file = tmp_path / "runs.jsonl"
    rc = S.main(["--variants", str(variants), "--train", str(train), "--test", str(test), "--seeds", "1",
                 "--first-seed", "5", "--out", str(out_file)])
    assert rc == 1  # the typo variant failed, loudly, and the others still ran
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary) == {"base", "smooth"}
    for r in summary.values():
        assert r["runs"] == 1 and 0.0 <= r["leaf_acc"] <= r["hf1"] <= r["level1_acc"] <= 1.0
        assert 0.0 <= r["valid_leaf_acc"] <= 1.0
    runs = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert sorted(r["variant"] for r in runs) == ["base", "smooth"] and {r["seed"] for r in runs} == {5}
    assert any('"typo"' in x and "unknown key" in x for x in lines)
