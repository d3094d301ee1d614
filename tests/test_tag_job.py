"""End-to-end: the tagging job on a tiny dump with bad rows, on the shared local[2] session."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.builders import dump_rows, write_dump_day

pytestmark = [pytest.mark.spark, pytest.mark.slow]

@pytest.fixture()
def job_conf(tmp_path, tiny_taxonomy_path):
    from vtag.jobs.config import load_job_conf

    return load_job_conf(overrides={"warehouse": str(tmp_path / "wh"), "taxonomy": str(tiny_taxonomy_path),
                                    "tag_partitions": "2"})


def test_tag_day_end_to_end(spark, tmp_path, tiny_bundle, job_conf):
    from vtag.jobs.pipeline.tag import tag_day
    from vtag.jobs.warehouse.tables import table_path

    # a bundle path no earlier test used: Python workers are reused across the session and cache
    # predictors by path, so only a fresh path guarantees this test sees the loads it counts
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    good, bad = dump_rows("a", 12)
    write_dump_day(tmp_path / "dump", "2026-11-20", good + [r for r, _ in bad])
    load_log = tmp_path / "loads"
    res = tag_day(spark, job_conf, "2026-11-20", dump_root=str(tmp_path / "dump"), bundle=str(bundle),
                  load_log=str(load_log))
    assert res.status == "succeeded"
    assert res.rows_read == len(good) + len(bad)
    assert res.rows_tagged == len(good)
    assert res.rows_quarantined == len(bad)

    tags = spark.read.format("delta").load(table_path(job_conf, "video_tags"))
    rows = {r.video_id: r for r in tags.collect()}
    assert set(rows) == {g["video_id"] for g in good}
    r = rows["a-1"]
    assert r.path[-1] == r.leaf_id and r.level1 == r.path_names[0]
    assert all(t.node_id for t in r.tags) and r.taxonomy_version and r.model_version and r.run_id == res.run_id
    assert rows["a-0"].cover_missing is True  # no cover at all
    assert rows["a-1"].cover_missing is False

    q = spark.read.format("delta").load(table_path(job_conf, "video_tags_quarantine")).collect()
    assert sorted(x.reason for x in q) == sorted(reason for _, reason in bad)
    assert all(json.loads(x.raw) for x in q)

    runs = spark.read.format("delta").load(table_path(job_conf, "tag_runs")).collect()
    assert [(x.status, x.rows_read, x.rows_tagged, x.rows_quarantined) for x in runs] == [
        ("succeeded", res.rows_read, res.rows_tagged, res.rows_quarantined)]

    # one load per Python worker: loads never exceed the distinct worker pids that loaded
    loads = list(load_log.iterdir())
    pids = {p.name.split("-")[1] for p in loads}
    assert 1 <= len(loads) == len(pids)

    # rerun of the day with corrupt covers tagged (missing modality) instead of quarantined: both
    # partitions are replaced, not appended to
    # (and with catalog_register on, as on a cluster: the run registers the tables by name)
    res2 = tag_day(spark, {**job_conf, "corrupt_cover": "tag", "catalog_register": "true",
                           "catalog_database": "vtag_tagjob", "dump_root": None},
                   "2026-11-20", dump_root=str(tmp_path / "dump"), bundle=str(tiny_bundle))
    assert spark.catalog.tableExists("vtag_tagjob.video_tags")
    assert spark.table("vtag_tagjob.video_tags").count() == res2.rows_tagged
    assert (res2.rows_tagged, res2.rows_quarantined) == (res.rows_tagged + 2, res.rows_quarantined - 2)
    again = {r.video_id: r for r in spark.read.format("delta").load(table_path(job_conf, "video_tags")).collect()}
    assert len(again) == len(good) + 2 and {r.run_id for r in again.values()} == {res2.run_id}
    assert again["a-corrupt"].cover_missing is True and again["a-junk"].cover_missing is True
    q2 = spark.read.format("delta").load(table_path(job_conf, "video_tags_quarantine")).collect()
    assert "undecodable_cover" not in {x.reason for x in q2} and len(q2) == len(bad) - 2


def test_bundle_of_other_taxonomy_is_refused(spark, tmp_path, tiny_bundle, job_conf):
    from vtag.jobs.pipeline.tag import BundleMismatchError, tag_day
    from vtag.jobs.warehouse.tables import table_path

    other = tmp_path / "other.yaml"
    other.write_text("label: other\nnodes:\n - {id: x, name: X, children: [{id: y, name: Y}]}\n", encoding="utf-8")
    good, _ = dump_rows("b", 3)
    write_dump_day(tmp_path / "dump", "2026-11-21", good)
    conf = {**job_conf, "taxonomy": str(other)}
    with pytest.raises(BundleMismatchError, match="taxonomy version"):
        tag_day(spark, conf, "2026-11-21", dump_root=str(tmp_path / "dump"), bundle=str(tiny_bundle))
    runs = spark.read.format("delta").load(table_path(conf, "tag_runs")).collect()
    assert [x.status for x in runs] == ["failed"] and "BundleTaxonomyMismatch" in runs[0].message


def test_a_failing_catalog_registration_does_not_fail_the_run(capsys):
    from vtag.jobs.pipeline.tag import register_in_catalog

    register_in_catalog(None, {"catalog_register": "true", "catalog_database": "not a name!"})
    assert "catalog registration failed" in capsys.readouterr().err
    register_in_catalog(None, {"catalog_register": "false"})  # off: nothing is touched


def test_day_range_for_backfills():
    """#17: one day-range helper (vtag.jobs.config.day_range); the tag, retag and quality commands use it."""
    import vtag.jobs.pipeline.quality
    import vtag.jobs.pipeline.retag
    import vtag.jobs.pipeline.tag
    from vtag.jobs.config import day_range

    assert day_range("2026-11-20", None) == ["2026-11-20"]
    assert day_range("2026-11-30", "2026-12-02") == ["2026-11-30", "2026-12-01", "2026-12-02"]
    with pytest.raises(ValueError, match="before"):
        day_range("2026-11-21", "2026-11-20")
    with pytest.raises(ValueError, match="more than 2"):
        day_range("2026-11-20", "2026-11-22", max_days=2)
    assert vtag.jobs.pipeline.tag.day_range is vtag.jobs.pipeline.retag.day_range is vtag.jobs.pipeline.quality.day_range is day_range
