"""``vtag.jobs.pipeline.profiles`` on hand-made ``video_tags`` rows (no model): what a refresh counts, its one
commit, which profiles a day is joined with, the ``vtag profiles refresh`` command, the settings."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.builders import write_dump_day

D0, D1, D2, D3 = "2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22"
TS = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)

#: (video_id, day, uploader, primary leaf, score, taxonomy version: None = the tiny taxonomy's)
TAGS = [
    ("v1", D1, "u1", "game_theme_moba", 0.9, None),
    ("v2", D1, "u1", "food_home", 0.3, None),  # not confident
    ("v3", D1, "u2", "film_live", 0.8, "old"),  # another taxonomy version
    ("v4", D1, "u3", "game_ip_wzry", 0.7, None),
    ("v5", D2, "u1", "game_theme_moba", 0.6, None),
    ("v6", D2, "u2", "food_bake", 0.95, None),  # also labeled: the label wins
    ("v1", D2, "u1", "game_theme_rpg", 0.9, None),  # v1 again: the later day wins
    ("v7", D3, "u1", "food_home", 0.99, None),  # after the refreshed day
    ("v8", D0, "u4", "film_live", 0.9, None),  # its dump day is gone
]
#: (video_id, uploader, labels) of the labeled dump's Parquet day (and LABELS_JSONL's JSON Lines day)
LABELS = [
    ("l1", "u5", ["food_bake", "food"]),
    ("l2", "u2", ["film_anim"]),
    ("v6", "u2", ["food_home"]),
    ("l3", "u5", ["ghost"]),  # unknown id: skipped
    ("l4", None, ["food_home"]),  # no uploader: skipped
    ("l5", "u3", ["game_theme_rpg"]),
]
LABELS_JSONL = [("j1", "u6", ["film_live"])]
#: through D2 with min_score 0.5 and count one: uploader -> (n_videos, leaf counts, level-1 counts, source)
WANT_D2 = {
    "u1": (2.0, {"game_theme_moba": 1.0, "game_theme_rpg": 1.0}, {"game": 2.0}, "tags"),
    "u2": (2.0, {"film_anim": 1.0, "food_home": 1.0}, {"film": 1.0, "food": 1.0}, "labels"),
    "u3": (2.0, {"game_ip_wzry": 1.0, "game_theme_rpg": 1.0}, {"game": 2.0}, "tags"),
    "u5": (1.0, {"food_bake": 1.0}, {"food": 1.0}, "labels"),
    "u6": (1.0, {"film_live": 1.0}, {"film": 1.0}, "labels"),
}


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory, tiny_taxonomy):
    """A warehouse with TAGS in ``video_tags``, their dump days (not D0) and the labeled dump (built
    once: every test starts with a refresh of its own)."""
    from vtag.jobs.config import load_job_conf
    from vtag.jobs.spark.schema import to_spark
    from vtag.jobs.warehouse.tables import conform, ensure_table, table_path
    from vtag.models.schema import LABELED_SCHEMA, VIDEO_TAGS_SCHEMA

    tmp_path = tmp_path_factory.mktemp("profiles-world")
    # a threshold, and each video counted as 1: counts easy to check (the default, by score, is tested below)
    conf = load_job_conf(overrides={"warehouse": str(tmp_path / "wh"), "dump_root": str(tmp_path / "dump"),
                                    "profiles.labels_root": str(tmp_path / "labeled"),
                                    "profiles.min_score": "0.5", "profiles.count": "one"})
    ensure_table(spark, conf, "video_tags")
    # every day's rows in one commit (a refresh reads rows, not the table's history)
    rows = [{"video_id": v, "dt": date.fromisoformat(d), "leaf_id": leaf, "path": tiny_taxonomy.path(leaf),
             "score": s, "taxonomy_version": ver or tiny_taxonomy.version, "run_id": "hand"}
            for v, d, _, leaf, s, ver in TAGS]
    conform(spark.createDataFrame(rows, to_spark(VIDEO_TAGS_SCHEMA)), "video_tags").write.format("delta") \
        .mode("append").save(table_path(conf, "video_tags"))
    for day in (D1, D2, D3):  # D0's dump is gone
        write_dump_day(tmp_path / "dump", day, [{"video_id": v, "title": "t", "uploader_id": u, "upload_ts": TS}
                                            for v, d, u, *_ in TAGS if d == day])
    labeled = tmp_path / "labeled" / "dt=2026-10-01"
    labeled.mkdir(parents=True)
    schema = pa.schema([f.with_nullable(True) for f in LABELED_SCHEMA])
    pq.write_table(pa.Table.from_pylist([{"video_id": v, "uploader_id": u, "labels": lab, "title": "t"}
                                         for v, u, lab in LABELS], schema=schema), labeled / "part-0.parquet")
    jsonl = tmp_path / "labeled" / "dt=2026-10-02"
    jsonl.mkdir()
    (jsonl / "part-0.jsonl").write_text("".join(json.dumps({"video_id": v, "uploader_id": u, "labels": lab}) + "\n"
                                                for v, u, lab in LABELS_JSONL), encoding="utf-8")
    return conf


def _table(spark, conf) -> dict[str, tuple]:
    from vtag.jobs.warehouse.tables import table_path

    rows = spark.read.format("delta").load(table_path(conf, "uploader_profiles")).collect()
    return {r.uploader_id: (r.n_videos, r.leaf_counts, r.level1_counts, r.source, r.updated_dt, r.taxonomy_version)
            for r in rows}


def _history(spark, conf):
    from delta.tables import DeltaTable

    from vtag.jobs.warehouse.tables import table_path

    return DeltaTable.forPath(spark, table_path(conf, "uploader_profiles")).history().orderBy("version").collect()


@pytest.mark.spark
@pytest.mark.slow
def test_refresh_counts_confident_tags_of_the_version_and_labels_in_one_commit(spark, world, tiny_taxonomy):
    from vtag.jobs.pipeline.profiles import refresh_profiles

    res = refresh_profiles(spark, world, D2, taxonomy=tiny_taxonomy)
    got = _table(spark, world)
    assert {u: v[:4] for u, v in got.items()} == WANT_D2
    assert {v[4:] for v in got.values()} == {(date.fromisoformat(D2), tiny_taxonomy.version)}
    assert (res.uploaders, res.labels_only, res.videos, res.days_without_dump) == (5, 3, 8.0, [D0])
    assert res.labels_skipped == {"no_video_id": 0, "no_uploader": 1, "unknown_label": 1}  # l4, l3
    assert "labeled rows not counted: 1 no uploader, 1 unknown label" in res.describe()
    commits = _history(spark, world)
    assert commits[-1].operation == "WRITE" and json.loads(commits[-1].userMetadata)["through"] == D2

    # rerun: the same content, one more commit
    refresh_profiles(spark, world, D2, taxonomy=tiny_taxonomy)
    assert _table(spark, world) == got and len(_history(spark, world)) == len(commits) + 1


@pytest.mark.spark
@pytest.mark.slow
def test_count_score_adds_each_tag_by_its_score_and_labels_as_one(spark, world, tiny_taxonomy):
    """``profiles.count: score`` (the default): a tag adds its score to its node, its level-1 node and
    ``n_videos`` (an expected count); a label adds 1; the threshold still applies; the table is
    recomputed for a day joined with other settings than the table's."""
    from vtag.jobs.pipeline.profiles import profiles_for_day, refresh_profiles

    conf = {**world, "profiles": {**world["profiles"], "count": "score"}}
    refresh_profiles(spark, conf, D2, taxonomy=tiny_taxonomy)
    got = _table(spark, conf)
    # u1: v1 (its D2 tag, 0.9) and v5 (0.6); v2 (0.3) is under min_score 0.5
    assert got["u1"][0] == pytest.approx(1.5) and got["u1"][3] == "tags"
    assert got["u1"][1] == pytest.approx({"game_theme_moba": 0.6, "game_theme_rpg": 0.9})
    assert got["u1"][2] == pytest.approx({"game": 1.5})
    # u3: its tag v4 (0.7) and its label l5 (1); u2: labels only (v6's label wins over its 0.95 tag)
    assert got["u3"][0] == pytest.approx(1.7)
    assert got["u3"][1] == pytest.approx({"game_ip_wzry": 0.7, "game_theme_rpg": 1.0})
    assert got["u2"][:4] == WANT_D2["u2"]
    # refreshed with count: score, joined by a conf with count: one: computed with the join's settings
    j = profiles_for_day(spark, world, D3, tiny_taxonomy, world["dump_root"])
    assert j.how == "computed"
    assert {r.uploader_id: r.profile_n_videos for r in j.frame.collect()}["u1"] == 2.0


@pytest.mark.spark
@pytest.mark.slow
def test_the_join_sees_only_days_before_the_tagged_day(spark, world, tiny_taxonomy):
    from vtag.jobs.pipeline.profiles import profiles_for_day, refresh_profiles

    refresh_profiles(spark, world, D2, taxonomy=tiny_taxonomy)
    dump = world["dump_root"]

    def joined(conf, dt):
        j = profiles_for_day(spark, conf, dt, tiny_taxonomy, dump)
        return j.how, j.through, {r.uploader_id: (r.profile_n_videos, r.profile_leaf_counts) for r in j.frame.collect()}

    how, through, rows = joined(world, D3)  # the nightly case: the table through the day before
    assert (how, through) == ("table", D2) and rows == {u: v[:2] for u, v in WANT_D2.items()}
    how, through, rows = joined(world, D2)  # a rerun of D2: computed through D1, never D2 itself
    assert (how, through) == ("computed", D1)
    assert rows["u1"] == (1.0, {"game_theme_moba": 1.0}) and rows["u2"] == WANT_D2["u2"][:2]
    stricter = {**world, "profiles": {**world["profiles"], "min_score": 0.95}}
    how, _, rows = joined(stricter, D3)  # other settings than the table's: computed
    assert how == "computed" and "u1" not in rows and "u3" in rows  # u3 keeps its label only
    assert rows["u3"] == (1.0, {"game_theme_rpg": 1.0})


@pytest.mark.spark
def test_join_profiles_keeps_every_row(spark):
    from vtag.jobs.pipeline.profiles import join_profiles

    rows = spark.createDataFrame([("a1", "ua"), ("a2", "ua"), ("b1", "ub"), ("n1", None)], "video_id string, uploader_id string")
    prof = spark.createDataFrame([("ua", 3.0, {"game": 3.0}, {"game_theme_rpg": 3.0})],
                                 "uploader_id string, profile_n_videos double, profile_level1_counts map<string,double>, "
                                 "profile_leaf_counts map<string,double>")
    out = {r.video_id: r for r in join_profiles(rows, prof).collect()}
    assert set(out) == {"a1", "a2", "b1", "n1"}
    assert out["a1"].profile_n_videos == out["a2"].profile_n_videos == 3.0
    assert out["a2"].profile_leaf_counts == {"game_theme_rpg": 3.0}
    assert all(out[v].profile_n_videos is None and out[v].profile_leaf_counts is None for v in ("b1", "n1"))


@pytest.mark.spark
@pytest.mark.slow
def test_vtag_profiles_refresh_command(spark, world, tiny_taxonomy_path, capsys, monkeypatch):
    import vtag.jobs.spark.session
    from vtag.jobs.cli import main

    monkeypatch.setattr(vtag.jobs.spark.session, "build_session", lambda conf: spark)  # keep the shared session's settings

    rc = main(["profiles", "refresh", "--date", D3, "--warehouse", world["warehouse"], "--taxonomy",
               str(tiny_taxonomy_path), "--conf", f"dump_root={world['dump_root']}", "--conf",
               f"profiles.labels_root={world['profiles']['labels_root']}", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and out["dt"] == D3 and out["uploaders"] == 5
    got = _table(spark, world)  # the shipped settings: every tag, by its score
    assert got["u1"][1] == pytest.approx({"game_theme_moba": 0.6, "game_theme_rpg": 0.9, "food_home": 1.29})
    assert got["u1"][0] == pytest.approx(2.79)
    assert main(["profiles", "refresh", "--date", "2026-02-30", "--warehouse", world["warehouse"]]) == 1
    assert "failed" in capsys.readouterr().err


def test_profile_settings_defaults_overrides_and_errors():
    from vtag.jobs.config import ConfigError, load_job_conf
    from vtag.jobs.pipeline.profiles import ProfileSettings, profile_settings

    assert profile_settings({}) == ProfileSettings(True, 0.0, None, "score")
    assert profile_settings(load_job_conf()) == ProfileSettings(True, 0.0, None, "score")  # conf/jobs/local.yaml
    conf = load_job_conf(overrides=["profiles.enabled=false", "profiles.min_score=0.7", "profiles.labels_root=/x",
                                    "profiles.count=one"])
    assert profile_settings(conf) == ProfileSettings(False, 0.7, "/x", "one")
    with pytest.raises(ConfigError, match="profiles.count score or one"):
        profile_settings({"profiles": {"count": "votes"}})
    with pytest.raises(ConfigError, match="within"):
        profile_settings({"profiles": {"min_score": 1.5}})
    with pytest.raises(ConfigError, match="profiles.min_scor"):
        profile_settings(load_job_conf(overrides=["profiles.min_scor=0.7"]))
    with pytest.raises(ConfigError, match="true or false"):
        profile_settings({"profiles": {"enabled": "maybe"}})
    with pytest.raises(ConfigError, match="not a section"):
        load_job_conf(overrides=["warehouse.x=1"])


def test_the_predictor_reads_the_profile_columns_as_the_job_hands_them_over(tiny_taxonomy):
    """mapInArrow gives the Predictor pandas from Arrow: maps become lists of (key, value) pairs."""
    from vtag.models.profiles import ProfileFeaturizer
    from vtag.models.schema import PROFILE_INPUT_FIELDS

    batch = pa.RecordBatch.from_pylist(
        [{"video_id": "a", "uploader_id": "ua", "profile_n_videos": 3.0, "profile_level1_counts": [("game", 3.0)],
          "profile_leaf_counts": [("game_theme_rpg", 2.0), ("game_theme_moba", 1.0)]},
         {"video_id": "b", "uploader_id": "new", "profile_n_videos": None, "profile_level1_counts": None,
          "profile_leaf_counts": None}],
        schema=pa.schema([pa.field("video_id", pa.string()), pa.field("uploader_id", pa.string()), *PROFILE_INPUT_FIELDS]))
    feats = ProfileFeaturizer(tiny_taxonomy)
    got = feats.transform(batch.to_pandas())
    want = feats.vectors([3.0, 0.0], [{"game_theme_rpg": 2.0, "game_theme_moba": 1.0}, None])
    assert got.shape == (2, 2 * tiny_taxonomy.n_nodes + 2) and (got == want).all() and got[0].any() and not got[1].any()
