"""``uploader_profiles`` through the tag job: refreshed after each day, joined into the next day's
model input, never the day being tagged, refused for another taxonomy version, idempotent reruns.

The module's nights (tag day 1, tag day 2) run once (``night``); the tests read its snapshots, and
only the rerun test tags again.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.builders import dump_rows, write_dump_day

pytestmark = [pytest.mark.spark, pytest.mark.slow]

D1, D2 = "2026-11-20", "2026-11-21"
#: run metadata: differs between two runs of the same day by design
RUN_META = ("run_id", "tagged_at")


def _profiles(spark, conf) -> dict[str, dict]:
    from vtag.jobs.warehouse.tables import table_path

    rows = spark.read.format("delta").load(table_path(conf, "uploader_profiles")).collect()
    return {r.uploader_id: r.asDict(recursive=True) for r in rows}


def _day_tags(spark, conf, dt) -> dict[str, dict]:
    from pyspark.sql import functions as F

    from vtag.jobs.warehouse.tables import table_path

    rows = spark.read.format("delta").load(table_path(conf, "video_tags")).where(F.col("dt") == F.lit(dt).cast("date"))
    return {r.video_id: {k: v for k, v in r.asDict(recursive=True).items() if k not in RUN_META} for r in rows.collect()}


def _inputs(folder) -> dict[str, dict]:
    """What the model was given (vtag.jobs.pipeline.inference.log_input files), by video_id; maps as dicts."""
    import pyarrow.parquet as pq

    out = {}
    for f in sorted(folder.glob("*.parquet")):
        for row in pq.read_table(f).to_pylist():
            out[row["video_id"]] = {k: dict(v) if isinstance(v, list) else v for k, v in row.items()}
    return out


def _run(spark, s, dt, log_name):
    from vtag.jobs.pipeline.tag import tag_day

    return tag_day(spark, s.conf, dt, dump_root=str(s.root / "dump"), bundle=str(s.bundle),
                   input_log=str(s.root / log_name))


@pytest.fixture(scope="module")
def night(spark, tiny_bundle, tiny_taxonomy_path, tmp_path_factory):
    """Day 1 (uploaders u0..u3, one bad row) and day 2 (u0..u3 again plus ``new``) tagged in order."""
    from vtag.jobs.config import load_job_conf

    root = tmp_path_factory.mktemp("profiles-night")
    # min_score 0 (the shipped default): every tag counts, by its score (profiles.count: score); the
    # threshold and count: one are tested in test_profiles_refresh
    conf = load_job_conf(overrides={"warehouse": str(root / "wh"), "taxonomy": str(tiny_taxonomy_path),
                                    "tag_partitions": "2", "profiles.min_score": "0"})
    day1, bad = dump_rows("p", 8)
    day2, _ = dump_rows("q", 8)
    for r in day2[6:]:
        r["uploader_id"] = "new"
    write_dump_day(root / "dump", D1, day1 + [bad[0][0]])  # a null video_id: quarantined
    write_dump_day(root / "dump", D2, day2)
    s = SimpleNamespace(conf=conf, root=root, bundle=tiny_bundle, day1=day1, day2=day2)
    s.res1 = _run(spark, s, D1, "in1")
    s.p1, s.tags1 = _profiles(spark, conf), _day_tags(spark, conf, D1)
    s.res2 = _run(spark, s, D2, "in2")
    s.p2, s.tags2 = _profiles(spark, conf), _day_tags(spark, conf, D2)
    s.in1, s.in2 = _inputs(root / "in1"), _inputs(root / "in2")
    return s


def _runs(spark, conf) -> list:
    from vtag.jobs.warehouse.tables import table_path

    return spark.read.format("delta").load(table_path(conf, "tag_runs")).orderBy("started_at").collect()


def test_refresh_after_day_one_counts_its_confident_tags(spark, night):
    from datetime import date

    from pyspark.sql import functions as F

    from vtag.jobs.pipeline.profiles import profile_settings
    from vtag.jobs.pipeline.tag import bundle_taxonomy_version
    from vtag.jobs.warehouse.tables import table_path

    conf, min_score = night.conf, profile_settings(night.conf).min_score
    tags = (spark.read.format("delta").load(table_path(conf, "video_tags"))
            .where((F.col("dt") == F.lit(D1).cast("date")) & (F.col("score") >= min_score)))
    dump = spark.read.parquet(str(night.root / "dump" / f"dt={D1}")).select("video_id", "uploader_id")
    joined = tags.join(dump, "video_id")
    want_leaf, want_l1 = {}, {}  # each tag counts by its score (an expected count)
    for r in joined.groupBy("uploader_id", "leaf_id").agg(F.sum("score").alias("c")).collect():
        want_leaf.setdefault(r.uploader_id, {})[r.leaf_id] = r.c
    for r in joined.groupBy("uploader_id", F.col("path")[0].alias("l1")).agg(F.sum("score").alias("c")).collect():
        want_l1.setdefault(r.uploader_id, {})[r.l1] = r.c

    assert set(night.p1) == set(want_leaf) == {"u0", "u1", "u2", "u3"}
    version = bundle_taxonomy_version(str(night.bundle))
    for u, row in night.p1.items():
        assert row["leaf_counts"] == pytest.approx(want_leaf[u], abs=1e-6)
        assert row["level1_counts"] == pytest.approx(want_l1[u], abs=1e-6)
        assert row["n_videos"] == pytest.approx(sum(want_leaf[u].values()), abs=1e-5)
        assert (row["updated_dt"], row["source"], row["taxonomy_version"]) == (date.fromisoformat(D1), "tags", version)
    assert joined.count() == night.res1.rows_tagged == len(night.day1)
    assert 0 < sum(r["n_videos"] for r in night.p1.values()) <= len(night.day1)
    assert "refreshed through 2026-11-20: 4 uploaders" in night.res1.profiles


def test_day_two_input_carries_the_profiles_of_day_one_only(spark, night):
    from datetime import date

    from vtag.jobs.pipeline.inference import PROFILE_INPUT_COLUMNS

    # day 1 (first night, no labels): every row's profile columns present and null
    assert set(night.in1) == {r["video_id"] for r in night.day1}
    assert all(set(PROFILE_INPUT_COLUMNS) <= set(row) for row in night.in1.values())
    assert all(row[c] is None for row in night.in1.values() for c in PROFILE_INPUT_COLUMNS)
    # day 2: the table refreshed through day 1 was joined as it is
    assert set(night.in2) == {r["video_id"] for r in night.day2}
    assert "joined the table through 2026-11-20" in night.res2.profiles
    for row in night.in2.values():
        p = night.p1.get(row["uploader_id"])
        if row["uploader_id"] == "new":
            assert p is None and all(row[c] is None for c in PROFILE_INPUT_COLUMNS)
        else:
            assert (row["profile_n_videos"], row["profile_leaf_counts"], row["profile_level1_counts"]) == (
                p["n_videos"], p["leaf_counts"], p["level1_counts"])
    # after day 2: both days counted
    assert set(night.p2) == {"u0", "u1", "u2", "u3", "new"}
    day2_score = {}  # uploader -> the scores of its day-2 tags (each tag counts by its score)
    for r in night.day2:
        day2_score[r["uploader_id"]] = day2_score.get(r["uploader_id"], 0.0) + night.tags2[r["video_id"]]["score"]
    assert sum(1 for r in night.day2 if r["uploader_id"] == "new") == 2
    assert night.p2["new"]["n_videos"] == pytest.approx(day2_score["new"], abs=1e-5)
    assert night.p2["u0"]["n_videos"] == pytest.approx(night.p1["u0"]["n_videos"] + day2_score["u0"], abs=1e-5)
    assert {r["updated_dt"] for r in night.p2.values()} == {date.fromisoformat(D2)}
    runs = _runs(spark, night.conf)
    assert [r.status for r in runs] == ["succeeded", "succeeded"]
    for r, res in zip(runs, (night.res1, night.res2)):  # the message also names the published versions
        assert all(part in r.message for part in res.profiles.split("; ")) and "published video_tags" in r.message


def test_rerunning_days_is_idempotent_and_never_sees_the_day_itself(spark, night):
    # rerun day 2 (the table is now through day 2): profiles through day 1 are computed on the fly
    again2 = _run(spark, night, D2, "in2-again")
    assert "computed through 2026-11-20" in again2.profiles
    assert _inputs(night.root / "in2-again") == night.in2
    assert _day_tags(spark, night.conf, D2) == night.tags2
    assert _profiles(spark, night.conf) == night.p2
    assert again2.rows_read == again2.rows_tagged + again2.rows_quarantined == len(night.day2)

    # rerun day 1 afterwards: its input sees neither day 1 nor day 2; the refresh writes days <= 1
    again1 = _run(spark, night, D1, "in1-again")
    assert _inputs(night.root / "in1-again") == night.in1
    assert _day_tags(spark, night.conf, D1) == night.tags1
    assert _profiles(spark, night.conf) == night.p1
    assert again1.rows_read == again1.rows_tagged + again1.rows_quarantined == len(night.day1) + 1
    assert [r.status for r in _runs(spark, night.conf)] == ["succeeded"] * 4


def test_profiles_of_another_taxonomy_version_are_refused(spark, tmp_path, tiny_bundle, tiny_taxonomy_path,
                                                          monkeypatch):
    """Refused; ``profiles.enabled=false`` tags without them; ``vtag profiles refresh`` rebuilds the
    table; a refresh that fails after the day is published fails the run."""
    from datetime import date

    import vtag.jobs.pipeline.tag
    from vtag.jobs.config import load_job_conf
    from vtag.jobs.pipeline.profiles import ProfileVersionError, refresh_profiles
    from vtag.jobs.pipeline.tag import tag_day
    from vtag.jobs.warehouse.tables import conform, ensure_table, table_path

    conf = load_job_conf(overrides={"warehouse": str(tmp_path / "wh"), "taxonomy": str(tiny_taxonomy_path),
                                    "tag_partitions": "2"})
    path = ensure_table(spark, conf, "uploader_profiles")
    foreign = spark.createDataFrame(
        [("u0", "another-version", 1.0, {"game": 1.0}, {"game_theme_rpg": 1.0}, date(2026, 11, 19), "tags")],
        "uploader_id string, taxonomy_version string, n_videos double, level1_counts map<string,double>, "
        "leaf_counts map<string,double>, updated_dt date, source string")
    conform(foreign, "uploader_profiles").write.format("delta").mode("append").save(path)
    good, _ = dump_rows("x", 3)
    write_dump_day(tmp_path / "dump", D1, good)

    with pytest.raises(ProfileVersionError, match="another-version"):
        tag_day(spark, conf, D1, dump_root=str(tmp_path / "dump"), bundle=str(tiny_bundle))
    runs = _runs(spark, conf)
    assert [r.status for r in runs] == ["failed"] and "ProfileVersionError" in runs[0].message

    # profiles.enabled=false: no join (the input has no profile columns), no refresh (the table is untouched)
    off = {**conf, "profiles": {"enabled": "false"}}
    res = tag_day(spark, off, D1, dump_root=str(tmp_path / "dump"), bundle=str(tiny_bundle),
                  input_log=str(tmp_path / "in"))
    assert res.status == "succeeded" and res.profiles == "profiles: off"
    seen = _inputs(tmp_path / "in")
    assert len(seen) == 3 and all("profile_n_videos" not in row for row in seen.values())
    def versions():
        return [r.taxonomy_version for r in spark.read.format("delta").load(table_path(conf, "uploader_profiles")).collect()]

    assert versions() == ["another-version"]

    # the remedy: rebuild for the bundle's version; then a refresh that fails after publishing fails the run
    refresh_profiles(spark, conf, D1, dump_root=str(tmp_path / "dump"), taxonomy=vtag.jobs.pipeline.tag.bundle_taxonomy(str(tiny_bundle)))
    assert "another-version" not in versions()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(vtag.jobs.pipeline.tag, "refresh_profiles", broken)
    with pytest.raises(RuntimeError, match="published, but refreshing uploader_profiles failed"):
        tag_day(spark, conf, D1, dump_root=str(tmp_path / "dump"), bundle=str(tiny_bundle))
    last = _runs(spark, conf)[-1]
    assert last.status == "failed" and "OSError: disk full" in last.message
    assert last.rows_read == last.rows_tagged == 3 and len(_day_tags(spark, conf, D1)) == 3  # the day is there
