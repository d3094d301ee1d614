"""bench/public_titles.py: the shared Chinese title sets as labeled dumps with their taxonomies
(skipped without the shared data)."""

from __future__ import annotations

import sys

import pytest

from tests.builders import REPO_ROOT, SHARED_DATA

sys.path.insert(0, str(REPO_ROOT / "bench"))

TITLES = SHARED_DATA / "zh_titles"
needs_shared = pytest.mark.skipif(not (TITLES / "tnews_clue").is_dir(), reason="shared title sets not present")


@needs_shared
def test_tnews_labels_stop_at_level_1_of_the_four_level_toutiao_tree(tmp_path):
    import public_titles
    import realdata

    from vtag.hierarchy.taxonomy import Taxonomy

    dump, tax_path, n = public_titles.write_set("tnews", tmp_path, limit=300)
    tax = Taxonomy.load(tax_path)
    assert n == 300 and tax.n_nodes == 1094 and tax.max_depth == 4
    frame, dropped = realdata.read_labeled_dump(dump, tax)
    assert len(frame) + dropped == 300
    assert {len(tax.path(x[0])) for x in frame["labels"]} == {1}  # partial labels: children unknown
    assert all(tax.children(x[0]) for x in frame["labels"])
    assert frame["labels"].map(lambda x: x[0]).nunique() >= 10
    assert frame["description"].notna().any() and frame["uploader_id"].isna().all()
    assert frame["video_id"].iloc[0] == "dev0"


@needs_shared
@pytest.mark.parametrize("name,classes", [("thucnews", 10), ("nlpcc", 18)])
def test_flat_sets_keep_every_row_and_their_classes(tmp_path, name, classes):
    import public_titles
    import realdata

    from vtag.hierarchy.taxonomy import Taxonomy

    rows, _ = public_titles.read_set(name)
    assert len(rows) == {"thucnews": 20000, "nlpcc": 36000}[name]
    dump, tax_path, _ = public_titles.write_set(name, tmp_path, limit=200)
    tax = Taxonomy.load(tax_path)
    assert tax.n_nodes == classes and tax.max_depth == 1
    frame, dropped = realdata.read_labeled_dump(dump, tax)
    assert dropped == 0 and len(frame) == 200
    if name == "nlpcc":
        assert " " not in "".join(frame["title"])  # the jieba tokens joined back


def test_an_unknown_set_is_refused():
    import public_titles

    with pytest.raises(ValueError, match="unknown set"):
        public_titles.read_set("imdb")


@pytest.mark.skipif(not (TITLES / "bilibili_popular_2023" / "videos.jsonl").is_file(),
                    reason="shared Bilibili data not present")
def test_bilibili_coarse_cuts_every_third_level_1_branch_and_keeps_uploaders_and_times(tmp_path):
    import public_titles
    import realdata

    from vtag.hierarchy.taxonomy import Taxonomy

    dump, tax_path, n = public_titles.write_set("bilibili_coarse", tmp_path, limit=2000)
    tax = Taxonomy.load(tax_path)
    frame, dropped = realdata.read_labeled_dump(dump, tax)
    assert dropped == 0 and len(frame) == n == 2000
    level1 = [x.id for x in tax.nodes if x.level == 1]
    coarse = set(level1[::public_titles.COARSE_EVERY])
    roots = frame["labels"].map(lambda x: tax.path(x[0])[0])
    depth = frame["labels"].map(lambda x: len(tax.path(x[0])))
    assert (depth[roots.isin(coarse)] == 1).all() and (depth[~roots.isin(coarse)] > 1).all()
    assert roots.isin(coarse).any() and (~roots.isin(coarse)).any()
    assert frame["uploader_id"].notna().all() and frame["upload_ts"].notna().all()


def _bilibili_jsonl(path):
    """Five videos: two Shanghai days (one upload at 17:00 UTC, already the next day there), one
    without a pubdate and one with a tid outside bilibili-v1."""
    import json

    rows = [
        {"bvid": "BV1", "title": "原神 新角色 实机", "tid": 172, "owner_mid": 1, "pubdate": 1692403200},  # 08-19 08:00 +8
        {"bvid": "BV2", "title": "家常红烧肉", "tid": 76, "owner_mid": 2, "pubdate": 1692464400},  # 08-19 17:00Z = 08-20 +8
        {"bvid": "BV3", "title": "猫咪日常", "tid": 218, "owner_mid": 3, "pubdate": 1692500000},
        {"bvid": "BV4", "title": "没有上传时间", "tid": 138, "owner_mid": 4},
        {"bvid": "BV5", "title": "未知分区", "tid": 99999, "owner_mid": 5, "pubdate": 1692500000},
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_bilibili_jsonl_becomes_one_partition_per_shanghai_upload_day(tmp_path, capsys):
    import public_titles

    from vtag.models.data import read_dumps

    jsonl = _bilibili_jsonl(tmp_path / "v.jsonl")
    dump, tax_path, days, unknown = public_titles.write_bilibili(jsonl, tmp_path / "out")
    assert (len(days), unknown) == (5, 1) and tax_path.read_text(encoding="utf-8").startswith(
        (public_titles.REPO / "conf/taxonomy/bilibili-v1.yaml").read_text(encoding="utf-8")[:40])
    frame = read_dumps(dump)
    assert sorted(days) == sorted(frame["dt"])  # the day of each row, as written
    by_day = frame.groupby("dt")["video_id"].apply(sorted).to_dict()
    assert by_day == {"2023-08-19": ["BV1", "BV4"], "2023-08-20": ["BV2", "BV3", "BV5"]}  # undated: the earliest day
    assert frame.set_index("video_id").loc["BV5", "labels"] == ["99999"]  # kept, for evaluate to tag unscored
    assert sorted(p.name for p in (dump / "dt=2023-08-20").iterdir()) == ["_SUCCESS", "part-0.parquet"]
    assert public_titles.main(["--set", "bilibili", "--jsonl", str(jsonl), "--out", str(tmp_path / "o2")]) == 0
    out = capsys.readouterr().out
    assert "5 rows (1 without a tid of the taxonomy" in out and "2 days 2023-08-19 .. 2023-08-20" in out
    assert "train with --dates ..2023-08-19, evaluate with --dates 2023-08-20.." in out


def test_day_cut_puts_the_share_nearest_the_test_fraction_on_the_later_days():
    import public_titles

    days = ["d1"] * 50 + ["d2"] * 30 + ["d3"] * 15 + ["d4"] * 5
    assert public_titles.day_cut(days, 0.2) == ("d2", "d3", 0.2)
    assert public_titles.day_cut(days, 0.01) == ("d3", "d4", 0.05)  # at least one day on each side
    assert public_titles.day_cut(days, 0.9) == ("d1", "d2", 0.5)
    with pytest.raises(ValueError, match="no day boundary"):
        public_titles.day_cut(["d1"] * 3)
    with pytest.raises(ValueError, match="no row has an upload time"):
        public_titles.upload_days([None, None])


def test_a_missing_jsonl_or_jsonl_with_another_set_is_refused(tmp_path, capsys):
    import public_titles

    with pytest.raises(SystemExit, match="public_titles.py: .*nope.jsonl"):
        public_titles.main(["--set", "bilibili", "--jsonl", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as e:
        public_titles.main(["--set", "tnews", "--jsonl", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "--jsonl and --tz go with --set bilibili" in capsys.readouterr().err
