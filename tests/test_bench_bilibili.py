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
                        "--systems", "vtag_flat,tfidf_lr,fasttext_ngrams,svm_tfidf_ctx"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # cpu-small has the profile input: the test days replayed (vtag_flat) and the bundle's profiles alone
    assert set(out) == {"vtag_flat", "vtag_flat[static]", "tfidf_lr", "fasttext_ngrams", "svm_tfidf_ctx"}
    for r in out.values():
        assert {"leaf_acc", "leaf_acc_std", "level1_acc", "level1_acc_std", "hf1", "hf1_std"} <= set(r)
        assert set(r) - {"leaf_acc", "leaf_acc_std", "level1_acc", "level1_acc_std", "hf1", "hf1_std"} <= {
            "leaf_acc_returning", "leaf_acc_returning_std", "leaf_acc_new", "leaf_acc_new_std"}
        assert 0.0 <= r["leaf_acc"] <= r["hf1"] <= r["level1_acc"] <= 1.0  # 2-level: hF1 between the two
    assert out["tfidf_lr"]["leaf_acc_std"] == 0.0  # deterministic peer: one run


def _read(tmp_path, text: str):
    """bench/bilibili.py's read_videos on ``text`` written as a JSONL file: (frame, rows dropped)."""
    sys.path.insert(0, str(REPO / "bench"))
    import bilibili

    from vtag.hierarchy.taxonomy import Taxonomy

    f = tmp_path / "v.jsonl"
    f.write_text(text, encoding="utf-8")
    return bilibili.read_videos(f, Taxonomy.load(REPO / "conf" / "taxonomy" / "bilibili-v1.yaml"))


def test_read_videos_maps_fields(tmp_path):
    frame, dropped = _read(tmp_path,
                           '{"aid": 1, "bvid": "BV1", "title": "做饭", "desc": "-", "tid": 76, "owner_mid": 9, '
                           '"duration": 61, "pubdate": 1692866952}\n'
                           '{"aid": 2, "bvid": "BV2", "title": "x", "desc": "d", "tid": 999999, "owner_mid": 9, '
                           '"duration": null, "pubdate": 1692866952}\n')
    assert dropped == 1 and len(frame) == 1
    row = frame.iloc[0]
    assert row["labels"] == ["76"] and row["description"] is None and row["uploader_id"] == "9"
    assert row["duration_s"] == 61 and row["cover"] is None


def test_read_videos_with_fields_missing(tmp_path):
    """Another sample in the format may lack optional fields, or have nulls that turn a column float."""
    frame, dropped = _read(tmp_path,
                           '{"aid": 1, "title": "做饭", "tid": 76}\n'
                           '{"aid": 2, "title": null, "tid": null}\n'
                           '{"title": "游戏", "tid": 17.0, "duration": 12.6}\n')
    assert dropped == 1  # the row without a tid is counted, not silently lost
    assert frame["labels"].tolist() == [["76"], ["17"]]
    assert frame["video_id"].tolist() == ["1", "line3"]
    assert frame["uploader_id"].isna().all() and frame["description"].isna().all()
    assert frame["duration_s"].iloc[1] == 13 and frame["duration_s"].isna().iloc[0]
    with pytest.raises(ValueError, match="tid"):
        _read(tmp_path, '{"aid": 1, "title": "做饭"}\n')


def test_default_split_of_one_file(tmp_path, capsys):
    """--data (one file, split by uploader): the default mode, on a slice of a made-up file."""
    sys.path.insert(0, str(REPO / "bench"))
    import bilibili

    rows = [f'{{"aid": {i}, "title": "标题{i % 7} 做饭 游戏", "tid": {(76, 17)[i % 2]}, "owner_mid": {i % 40}}}'
            for i in range(200)]
    f = tmp_path / "all.jsonl"
    f.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert bilibili.main(["--data", str(f), "--split", "uploader", "--systems", "tfidf_lr", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "split by uploader (test fraction 0.2, split seed 0)" in out and "0 uploaders on both sides" in out
    assert json.loads(out.strip().splitlines()[-1])["tfidf_lr"]["leaf_acc"] >= 0.0
    with pytest.raises(SystemExit, match="needs upload times"):  # the default time split, without pubdate
        bilibili.main(["--data", str(f), "--systems", "tfidf_lr", "--seeds", "1"])


def test_time_split_reports_returning_and_new_uploaders(tmp_path, capsys):
    """--split time (the default): the latest 20 % by pubdate are the test side; the SVM peers run
    with C chosen on the training side's own latest 10 %; returning vs new uploaders are reported."""
    sys.path.insert(0, str(REPO / "bench"))
    import bilibili

    words = {76: "做饭 美食 菜谱", 17: "游戏 攻略 通关"}
    rows = [f'{{"aid": {i}, "title": "{words[(76, 17)[i % 2]]} {i % 5}", "tid": {(76, 17)[i % 2]}, '
            f'"owner_mid": {i % 30}, "pubdate": {1_690_000_000 + 3600 * i}}}' for i in range(240)]
    f = tmp_path / "all.jsonl"
    f.write_text("\n".join(rows) + "\n", encoding="utf-8")
    md = tmp_path / "r.md"
    assert bilibili.main(["--data", str(f), "--systems", "svm_tfidf,svm_tfidf_ctx,svm_chars,svm_chars_ctx",
                          "--seeds", "1", "--md-out", str(md)]) == 0
    out = capsys.readouterr().out
    assert "split in time" in out and "train 192 rows, test 48 rows" in out
    res = json.loads(out.strip().splitlines()[-1])
    assert set(res) == {"svm_tfidf", "svm_tfidf_ctx", "svm_chars", "svm_chars_ctx"}
    for r in res.values():
        assert r["leaf_acc"] > 0.9 and "leaf_acc_returning" in r  # every test uploader posted before
        assert "leaf_acc_new" not in r
    assert "returning uploaders" in md.read_text()


def test_char_features_join_rows_that_share_no_word():
    """SparseFeatures(chars=True): the word TF-IDF and the character 1–3-grams, each L2-normalised,
    side by side and normalised again; two titles without a common jieba word still overlap."""
    sys.path.insert(0, str(REPO / "bench"))
    import bilibili

    texts = ["原神新角色抽卡", "原神抽卡记录", "今天做红烧肉", "红烧肉的做法"]
    toks = [["原神新", "角色", "抽卡"], ["原神", "抽卡", "记录"], ["今天", "做", "红烧肉"], ["红烧肉", "的", "做法"]]
    ctx = [["up=a", "dur=1"]] * 4
    words = bilibili.SparseFeatures(context=False).fit_transform(toks, ctx)
    both = bilibili.SparseFeatures(context=False, chars=True)
    x = both.fit_transform(toks, ctx, texts)
    assert x.shape[0] == 4 and x.shape[1] > words.shape[1]
    assert abs((x.multiply(x)).sum(axis=1) - 1.0).max() < 1e-5  # unit rows
    assert (words[0] @ words[1].T).toarray()[0, 0] > 0 and (words[0] @ words[2].T).toarray()[0, 0] == 0
    assert (x[0] @ x[1].T).toarray()[0, 0] > (x[0] @ x[2].T).toarray()[0, 0]
    with pytest.raises(ValueError, match="texts"):
        both.transform(toks, ctx)
    assert both.transform(toks[:1], ctx[:1], texts[:1]).shape == (1, x.shape[1])


def test_time_split_with_a_gap(tmp_path):
    """--gap-fraction: the rows between the training and the test side are left out; the test side is
    the same latest rows as without a gap, and every training row is earlier than every left-out one."""
    sys.path.insert(0, str(REPO / "bench"))
    import bilibili
    import pandas as pd

    frame = pd.DataFrame({"video_id": [str(i) for i in range(100)],
                          "upload_ts": pd.to_datetime([1_690_000_000 + 60 * ((i * 37) % 100) for i in range(100)],
                                                      unit="s", utc=True)})
    train0, test0 = bilibili.time_split(frame, 0.2)
    train, test = bilibili.time_split(frame, 0.2, 0.3)
    assert len(train0) == 80 and len(train) == 50 and test["video_id"].tolist() == test0["video_id"].tolist()
    gap = set(train0["video_id"]) - set(train["video_id"])
    gap_ts = frame.set_index("video_id").loc[sorted(gap), "upload_ts"]
    assert len(gap) == 30 and train["upload_ts"].max() < gap_ts.min() and gap_ts.max() < test["upload_ts"].min()
    with pytest.raises(SystemExit, match="gap-fraction"):
        bilibili.time_split(frame, 0.2, 0.8)
    f = tmp_path / "x.jsonl"
    f.write_text('{"aid": 1, "title": "做饭", "tid": 76, "pubdate": 1692866952}\n', encoding="utf-8")
    with pytest.raises(SystemExit, match="gap-fraction goes with"):
        bilibili.main(["--data", str(f), "--split", "uploader", "--gap-fraction", "0.2", "--systems", "tfidf_lr"])
