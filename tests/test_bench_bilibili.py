"""Smoke test of bench/bilibili.py on a tiny slice of the shared Bilibili file (skipped without it)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VTAG_SHARED_DATA", REPO.parent / "shared" / "data"))
VIDEOS = SHARED / "zh_titles" / "bilibili_popular_2023" / "videos.jsonl"


@pytest.mark.slow
@pytest.mark.skipif(not VIDEOS.is_file(), reason="shared Bilibili data not present")
def test_bilibili_bench_on_a_slice(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "bench"))
    import bilibili

    with open(VIDEOS, encoding="utf-8") as fh:
        lines = [next(fh) for _ in range(400)]
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(lines[:300]), encoding="utf-8")
    test.write_text("".join(lines[300:]), encoding="utf-8")
    rc = bilibili.main(["--train", str(train), "--test", str(test), "--seeds", "2", "--vtag-epochs", "1",
                        "--systems", "vtag_flat,tfidf_lr,fasttext_ngrams"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"vtag_flat", "tfidf_lr", "fasttext_ngrams"}
    for r in out.values():
        assert set(r) == {"leaf_acc", "leaf_acc_std", "level1_acc", "level1_acc_std", "hf1", "hf1_std"}
        assert 0.0 <= r["leaf_acc"] <= r["hf1"] <= r["level1_acc"] <= 1.0  # 2-level: hF1 between the two
    assert out["tfidf_lr"]["leaf_acc_std"] == 0.0  # deterministic peer: one run


def test_read_videos_maps_fields(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    import bilibili

    from hierarchy.taxonomy import Taxonomy

    tax = Taxonomy.load(REPO / "conf" / "taxonomy" / "bilibili-v1.yaml")
    f = tmp_path / "v.jsonl"
    f.write_text('{"aid": 1, "bvid": "BV1", "title": "做饭", "desc": "-", "tid": 76, "owner_mid": 9, '
                 '"duration": 61, "pubdate": 1692866952}\n'
                 '{"aid": 2, "bvid": "BV2", "title": "x", "desc": "d", "tid": 999999, "owner_mid": 9, '
                 '"duration": null, "pubdate": 1692866952}\n', encoding="utf-8")
    frame, dropped = bilibili.read_videos(f, tax)
    assert dropped == 1 and len(frame) == 1
    row = frame.iloc[0]
    assert row["labels"] == ["76"] and row["description"] is None and row["uploader_id"] == "9"
    assert row["duration_s"] == 61 and row["cover"] is None


def test_read_videos_with_fields_missing(tmp_path):
    """Another sample in the format may lack optional fields, or have nulls that turn a column float."""
    sys.path.insert(0, str(REPO / "bench"))
    import bilibili

    from hierarchy.taxonomy import Taxonomy

    tax = Taxonomy.load(REPO / "conf" / "taxonomy" / "bilibili-v1.yaml")
    f = tmp_path / "v.jsonl"
    f.write_text('{"aid": 1, "title": "做饭", "tid": 76}\n'
                 '{"aid": 2, "title": null, "tid": null}\n'
                 '{"title": "游戏", "tid": 17.0, "duration": 12.6}\n', encoding="utf-8")
    frame, dropped = bilibili.read_videos(f, tax)
    assert dropped == 1  # the row without a tid is counted, not silently lost
    assert frame["labels"].tolist() == [["76"], ["17"]]
    assert frame["video_id"].tolist() == ["1", "line3"]
    assert frame["uploader_id"].isna().all() and frame["description"].isna().all()
    assert frame["duration_s"].iloc[1] == 13 and frame["duration_s"].isna().iloc[0]
    g = tmp_path / "no_tid.jsonl"
    g.write_text('{"aid": 1, "title": "做饭"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="tid"):
        bilibili.read_videos(g, tax)
