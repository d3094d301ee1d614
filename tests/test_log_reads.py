"""vtag.jobs.warehouse.log_reads: the publish's delta-rs reads give what the Spark reads give, and a
table delta-rs cannot read falls back to Spark."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # the fixture writes 6 commits: ~10 s

DAY, OTHER = "2026-03-02", "2026-03-03"


@pytest.fixture(scope="module")
def warehouse(spark, tmp_path_factory):
    """A warehouse whose quarantine holds, on DAY, one row entry and two file entries (footer rows 7 and
    none) over two publish commits, and whose tag_runs holds two runs of DAY and one of
    OTHER."""
    from vtag.jobs.config import load_job_conf
    from vtag.jobs.warehouse.tables import append_run, ensure_table, replace_day

    conf = load_job_conf(overrides={"warehouse": str(tmp_path_factory.mktemp("log-reads") / "wh")})
    for name in ("tag_runs", "video_tags_quarantine"):
        ensure_table(spark, conf, name)
    schema = "video_id string, dt date, raw string, reason string, detail string, run_id string"

    def quarantine(rows, run_id, dt=DAY):
        frame = spark.createDataFrame(
            [(v, datetime.fromisoformat(dt).date(), raw, reason, None, run_id) for v, raw, reason in rows], schema)
        replace_day(frame, conf, "video_tags_quarantine", dt, meta={"job": "tag", "dt": dt, "run_id": run_id,
                                                                    "op": "publish"})

    quarantine([("v1", '{"video_id": "v1"}', "empty_text")], "r1")
    quarantine([("v1", '{"video_id": "v1"}', "empty_text"),
                (None, json.dumps({"path": "a.parquet", "rows": 7}), "unreadable_file"),
                (None, json.dumps({"path": "b.parquet"}), "schema_mismatch")], "r2")
    quarantine([("v9", "{}", "empty_text")], "r3", dt=OTHER)
    started = datetime(2026, 3, 3, 1, 2, 3, tzinfo=timezone.utc)
    for run_id, dt in (("r1", DAY), ("r2", DAY), ("r3", OTHER)):
        append_run(spark, conf, {"run_id": run_id, "job": "tag", "dt": dt, "status": "started", "started_at": started})
    return conf


def _through_spark(monkeypatch):
    from vtag.jobs.warehouse import log_reads

    monkeypatch.setattr(log_reads, "open_table", lambda *a, **k: None)


def _reads(spark, conf):
    from vtag.jobs.pipeline import publish_state as S
    from vtag.jobs.warehouse import log_reads

    runs = sorted(S.runs_of_day(spark, conf, DAY), key=lambda r: r["run_id"])
    return {
        "version": S.table_version(spark, conf, "video_tags_quarantine"),
        "commits": [(c.version, c.operation, c.meta.get("run_id")) for c in S.commits_since(spark, conf, "video_tags_quarantine", 0)],
        "count v1": S.day_count(spark, conf, "video_tags_quarantine", DAY, 1),
        "count": S.day_count(spark, conf, "video_tags_quarantine", DAY),
        "runs": [(r["run_id"], r["status"], r["dt"].isoformat(), r["started_at"]) for r in runs],
        "is_table": log_reads.is_table(conf, "tag_runs"),
    }


def test_delta_rs_reads_match_the_spark_reads(spark, warehouse, monkeypatch):
    fast = _reads(spark, warehouse)
    _through_spark(monkeypatch)
    slow = _reads(spark, warehouse)
    assert fast == slow
    assert fast["version"] == 3
    assert [c[2] for c in fast["commits"]] == ["r1", "r2", "r3"]
    assert (fast["count v1"], fast["count"]) == (1, 3)
    started = datetime(2026, 3, 3, 1, 2, 3, tzinfo=timezone.utc)
    assert fast["runs"] == [("r1", "started", DAY, started), ("r2", "started", DAY, started)]


def test_the_quarantine_weight_counts_file_entries_by_their_footer(spark, warehouse, monkeypatch):
    from vtag.jobs.pipeline.publish_state import AuditError, Staged, verify_published
    from vtag.jobs.warehouse import log_reads

    # one row + 7 + 0 (a footer without a row count counts 0)
    assert log_reads.quarantine_weight(warehouse, DAY) == (3, 8)
    assert log_reads.quarantine_weight(warehouse, DAY, 1) == (1, 1)
    good = Staged({}, {}, {"video_tags_quarantine": 3}, 0, 8)
    bad = Staged({}, {}, {"video_tags_quarantine": 3}, 0, 9)
    for path in ("delta-rs", "spark"):
        if path == "spark":
            _through_spark(monkeypatch)
        verify_published(spark, warehouse, DAY, good, {"video_tags_quarantine": 2})
        with pytest.raises(AuditError, match="holds \\(3, 8\\) rows of the day, the run staged \\(3, 9\\)"):
            verify_published(spark, warehouse, DAY, bad, {"video_tags_quarantine": 2})


def test_a_table_delta_rs_cannot_open_is_reported_once_and_read_by_spark(spark, warehouse, monkeypatch, capsys):
    import deltalake

    from vtag.jobs.pipeline.publish_state import table_version
    from vtag.jobs.warehouse import log_reads

    def refuse(*args, **kwargs):
        raise deltalake.exceptions.DeltaProtocolError("reader feature 'madeUp' is not supported")

    monkeypatch.setattr(deltalake, "DeltaTable", refuse)
    monkeypatch.setattr(log_reads, "_reported", set())
    assert log_reads.latest_version(warehouse, "video_tags_quarantine") is None
    assert table_version(spark, warehouse, "video_tags_quarantine") == 3
    err = capsys.readouterr().err
    assert err.count("delta-rs cannot read table video_tags_quarantine") == 1
    assert "madeUp" in err and "reading it through Spark" in err


def test_delta_uri_and_storage_options():
    from vtag.jobs.warehouse.log_reads import delta_uri, storage_options

    assert delta_uri("s3a://bucket/wh/video_tags") == "s3://bucket/wh/video_tags"
    assert delta_uri("file:/tmp/wh/video_tags") == "/tmp/wh/video_tags"
    assert storage_options({"storage_options": {}}) is None
    assert storage_options({"storage_options": {"AWS_REGION": "eu-west-1", "timeout": 5}}) == {
        "AWS_REGION": "eu-west-1", "timeout": "5"}
