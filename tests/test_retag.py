"""Re-tagging after a taxonomy change: plan, run (remap + re-infer), resume, history, refusals."""

from __future__ import annotations

import pytest

from tests.builders import dump_rows, write_dump_day

pytestmark = [pytest.mark.spark, pytest.mark.slow]

DAYS = ["2026-11-20", "2026-11-21", "2026-11-22"]
GONE = {"food_home", "food_bake", "game_ip_spiderman", "game_ip_ironman"}  # split, removed, merged


def _day(spark, conf, table, d):
    from pyspark.sql import functions as F

    from vtag.jobs.warehouse.tables import table_path

    return [r.asDict(recursive=True) for r in spark.read.format("delta").load(table_path(conf, table))
            .where(F.col("dt") == F.lit(d).cast("date")).collect()]


def _version(spark, conf):
    from delta.tables import DeltaTable

    from vtag.jobs.warehouse.tables import table_path

    return DeltaTable.forPath(spark, table_path(conf, "video_tags")).history(1).first().version


def test_retag_end_to_end(spark, tmp_path, tiny_bundle, tiny_bundle_v2, tiny_taxonomy_path, retag_v2_path):
    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.jobs.config import load_job_conf
    from vtag.jobs.pipeline import retag
    from vtag.jobs.pipeline.tag import tag_day
    from vtag.models.bundle import bundle_model_version

    v1, v2 = Taxonomy.load(tiny_taxonomy_path), Taxonomy.load(retag_v2_path)
    conf = load_job_conf(overrides={"warehouse": str(tmp_path / "wh"), "taxonomy": str(tiny_taxonomy_path),
                                    "tag_partitions": "2"})
    dump = tmp_path / "dump"
    for i, d in enumerate(DAYS):
        good, bad = dump_rows(f"r{i}", 24)
        write_dump_day(dump, d, good + [r for r, _ in bad])
        tag_day(spark, conf, d, dump_root=str(dump), bundle=str(tiny_bundle))
    before = {d: {r["video_id"]: r for r in _day(spark, conf, "video_tags", d)} for d in DAYS}
    old_model, new_model = bundle_model_version(tiny_bundle), bundle_model_version(tiny_bundle_v2)

    def expect_reinfer(row):
        return bool({t["node_id"] for t in row["tags"]} & GONE)

    # plan: counts by the hand rule (a row needs the model iff one of its tags was split/merged/removed)
    plan = {p.dt: p for p in retag.plan(spark, conf, str(tiny_taxonomy_path), str(retag_v2_path), DAYS[1], DAYS[2])}
    for d in DAYS[1:]:
        want_reinfer = sum(expect_reinfer(r) for r in before[d].values())
        assert (plan[d].rows, plan[d].at_target, plan[d].reinfer) == (len(before[d]), 0, want_reinfer)
        assert plan[d].remap == len(before[d]) - want_reinfer

    # dry run writes nothing
    v_before = _version(spark, conf)
    dry = retag.run(spark, conf, str(tiny_taxonomy_path), str(retag_v2_path), DAYS[1], DAYS[2],
                    str(tiny_bundle_v2), dump_root=str(dump), dry_run=True)
    assert [r.status for r in dry] == ["dry-run", "dry-run"] and _version(spark, conf) == v_before

    res = retag.run(spark, conf, str(tiny_taxonomy_path), str(retag_v2_path), DAYS[1], DAYS[2],
                    str(tiny_bundle_v2), dump_root=str(dump))
    assert [r.status for r in res] == ["succeeded", "succeeded"]
    for d in DAYS[1:]:
        rows = _day(spark, conf, "video_tags", d)
        ids = [r["video_id"] for r in rows]
        assert sorted(ids) == sorted(before[d]) and len(set(ids)) == len(ids)  # nothing lost or duplicated
        for r in rows:
            old = before[d][r["video_id"]]
            assert r["taxonomy_version"] == v2.version
            assert r["path"] == v2.path(r["leaf_id"]) and r["path_names"] == v2.path_names(r["leaf_id"])
            tag_ids = {t["node_id"] for t in r["tags"]}
            assert tag_ids <= set(v2.ids) and set(r["path"]) <= tag_ids
            if expect_reinfer(old):
                assert r["model_version"] == new_model  # came from the v2 model
            else:  # remapped: same prediction, new names and paths
                assert r["model_version"] == old_model and r["leaf_id"] == old["leaf_id"]
                assert r["score"] == pytest.approx(old["score"])
                if old["leaf_id"] == "game_theme_rpg":
                    assert r["path_names"] == ["游戏", "题材", "角色扮演RPG"] and r["level3"] == "角色扮演RPG"
                if old["leaf_id"] == "game_ip_wzry":
                    assert r["path"] == ["game", "game_esports", "game_ip_wzry"]
                    assert {"game_esports", "game_theme_moba"} <= tag_ids
    # the day outside the range is untouched
    assert {r["video_id"]: r for r in _day(spark, conf, "video_tags", DAYS[0])} == before[DAYS[0]]

    # a rerun is a no-op
    v_after = _version(spark, conf)
    again = retag.run(spark, conf, str(tiny_taxonomy_path), str(retag_v2_path), DAYS[1], DAYS[2],
                      str(tiny_bundle_v2), dump_root=str(dump))
    assert [r.status for r in again] == ["skipped", "skipped"] and _version(spark, conf) == v_after

    # history: the tag run and the retag run of that day, the old rows still reachable
    hist = retag.history(spark, conf, DAYS[1])
    assert [h["job"] for h in hist] == ["tag", "retag"]
    assert list(hist[0]["rows"]) == [f"{v1.version}/{old_model}"]
    assert all(k.startswith(v2.version) for k in hist[1]["rows"])


def test_retag_refusals(spark, tmp_path, tiny_bundle, tiny_taxonomy_path, retag_v2_path):
    from vtag.jobs.config import load_job_conf
    from vtag.jobs.pipeline import retag
    from vtag.jobs.pipeline.tag import tag_day
    from vtag.models.bundle import BundleTaxonomyMismatch

    conf = load_job_conf(overrides={"warehouse": str(tmp_path / "wh"), "taxonomy": str(tiny_taxonomy_path)})
    good, _ = dump_rows("z", 6)
    write_dump_day(tmp_path / "dump", DAYS[0], good)
    tag_day(spark, conf, DAYS[0], dump_root=str(tmp_path / "dump"), bundle=str(tiny_bundle))
    args = (spark, conf, str(tiny_taxonomy_path), str(retag_v2_path))
    with pytest.raises(BundleTaxonomyMismatch, match="not the target"):  # a bundle of the old taxonomy
        retag.run(*args, DAYS[0], DAYS[0], str(tiny_bundle), dump_root=str(tmp_path / "dump"))
    with pytest.raises(retag.RetagError, match="not yet tagged.*2026-11-21"):
        retag.plan(*args, DAYS[0], DAYS[1])
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n - {id: a, name: A}\n - {id: a, name: B}\n", encoding="utf-8")
    with pytest.raises(retag.RetagError, match="target taxonomy is invalid.*duplicate id"):
        retag.plan(spark, conf, str(tiny_taxonomy_path), str(bad), DAYS[0], DAYS[0])
