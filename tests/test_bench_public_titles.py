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
