"""``vtag quality`` (jobs/pipeline/quality.py): the gate on hand-written tag tables (no model needed)."""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime, timezone

import pytest

from vtag.jobs.pipeline.quality import check_days, day_range, js_divergence


def test_js_divergence_bounds():
    assert js_divergence({"a": 3, "b": 1}, {"a": 30, "b": 10}) == pytest.approx(0.0)
    assert js_divergence({"a": 1}, {"b": 1}) == pytest.approx(1.0)
    mid = js_divergence({"a": 1, "b": 1}, {"a": 1})
    assert 0 < mid < 1
    assert js_divergence({"a": 1, "b": 3}, {"a": 3, "b": 1}) == pytest.approx(js_divergence({"a": 3, "b": 1}, {"a": 1, "b": 3}))
    with pytest.raises(ValueError):
        js_divergence({}, {"a": 1})


def _old_gate_js(p: dict, q: dict) -> float:
    """The gate's Jensen–Shannon divergence before #17 (hand-written, base 2), kept as the reference."""
    import math

    keys = sorted(set(p) | set(q), key=repr)
    sp, sq = sum(max(0.0, float(p.get(k, 0))) for k in keys), sum(max(0.0, float(q.get(k, 0))) for k in keys)
    pa_ = [max(0.0, float(p.get(k, 0))) / sp for k in keys]
    qa_ = [max(0.0, float(q.get(k, 0))) / sq for k in keys]
    m = [(a + b) / 2 for a, b in zip(pa_, qa_)]

    def kl(x: list[float]) -> float:
        return sum(a * math.log2(a / b) for a, b in zip(x, m) if a > 0)

    return max(0.0, min(1.0, (kl(pa_) + kl(qa_)) / 2))


def test_js_divergence_is_scipys_squared_distance_with_the_old_numbers():
    """#17: the gate's drift is now scipy's ``jensenshannon`` (a distance) squared; on random
    level-1 count distributions (sparse, disjoint, equal, tuple keys as the report's) it gives the
    old hand-written divergence to 1e-12, so no gate decision at the usual thresholds changes."""
    import numpy as np
    from scipy.spatial.distance import jensenshannon

    import vtag.jobs.analytics.report

    assert vtag.jobs.analytics.report.js_divergence is js_divergence  # one function for the gate and the report
    rng = np.random.default_rng(17)
    worst = 0.0
    for trial in range(400):
        k = int(rng.integers(1, 40))
        keys = [f"n{i}" for i in range(k)] if trial % 2 else [("lvl", f"n{i}") for i in range(k)]
        p = {key: float(rng.integers(0, 500)) * (rng.random() < 0.8) for key in keys}
        q = {key: float(rng.integers(0, 500)) * (rng.random() < 0.8) for key in keys[int(rng.integers(0, k)):]}
        if trial % 7 == 0:
            q = dict(p)  # the same day twice: 0, never nan
        if not sum(p.values()) or not sum(q.values()):
            continue
        new, old = js_divergence(p, q), _old_gate_js(p, q)
        worst = max(worst, abs(new - old))
        for threshold in (0.01, 0.05, 0.1, 0.2):
            if abs(old - threshold) > 1e-9:
                assert (new <= threshold) == (old <= threshold)
    assert worst < 1e-12, worst
    a, b = np.array([3.0, 1.0, 0.0]), np.array([1.0, 1.0, 2.0])
    assert js_divergence({"x": 3, "y": 1}, {"x": 1, "y": 1, "z": 2}) == pytest.approx(
        jensenshannon(a, b, base=2) ** 2, abs=1e-15)
    assert js_divergence({"a": 1.0, "b": 1e-17}, {"a": 1.0}) == pytest.approx(0.0, abs=1e-12)  # no nan


def test_day_range():
    assert day_range("2024-02-28", "2024-03-01") == ["2024-02-28", "2024-02-29", "2024-03-01"]
    with pytest.raises(ValueError):
        day_range("2024-03-02", "2024-03-01")


# ------------------------------------------------------------------ Spark: tables written by hand
T0 = datetime(2024, 3, 1, 3, 0, tzinfo=timezone.utc)


def _write_day(spark, conf, dt, level1s, *, n_quarantine=0, run_id=None, rows_read=None, status="succeeded",
               job="tag", version="tv1", started=T0):
    """Write one day's partitions and its tag_runs row as the tag job would (counts consistent)."""
    from vtag.jobs.spark.schema import to_spark
    from vtag.jobs.warehouse.tables import append_run, ensure_table, replace_day
    from vtag.models.schema import QUARANTINE_SCHEMA, VIDEO_TAGS_SCHEMA

    run_id = run_id or f"{job}-{dt}-x"
    for name in ("video_tags", "video_tags_quarantine"):
        ensure_table(spark, conf, name)
    d = date.fromisoformat(dt)
    tag_fields = to_spark(VIDEO_TAGS_SCHEMA).fieldNames()
    tags = []
    for i, l1 in enumerate(level1s):
        row = dict.fromkeys(tag_fields)
        row.update(video_id=f"v{i}", dt=d, leaf_id=f"{l1}_leaf", level1=l1, score=0.9, cover_missing=False,
                   taxonomy_version=version, model_version="m1", run_id=run_id, tagged_at=started)
        tags.append(tuple(row[f] for f in tag_fields))
    quar = [(f"bad{i}", d, "{}", "empty_content", None, run_id) for i in range(n_quarantine)]
    replace_day(spark.createDataFrame(tags, to_spark(VIDEO_TAGS_SCHEMA)), conf, "video_tags", dt)
    if quar:  # no quarantine rows: nothing to replace (no test rewrites a day that had some)
        replace_day(spark.createDataFrame(quar, to_spark(QUARANTINE_SCHEMA)), conf, "video_tags_quarantine", dt)
    read = len(level1s) + n_quarantine if rows_read is None else rows_read
    append_run(spark, conf, {
        "run_id": run_id, "job": job, "dt": dt, "taxonomy_version": version, "model_version": "m1",
        "rows_read": read, "rows_tagged": len(level1s), "rows_quarantined": n_quarantine,
        "started_at": started, "finished_at": started, "seconds": 1.0, "status": status,
        "message": None if status == "succeeded" else "boom",
    })
    return run_id


@pytest.fixture(scope="module")
def wh_conf(spark, tmp_path_factory):
    """One warehouse for the module (its tables are created once): every test writes days of its own
    month, and the gate's checks of a day read that day and the day before only."""
    from vtag.jobs.config import load_job_conf

    return load_job_conf(overrides={"warehouse": str(tmp_path_factory.mktemp("quality") / "warehouse")})


def _by_name(report):
    return {c.name: c for c in report.checks}


@pytest.mark.spark
@pytest.mark.slow
def test_quality_gate_passes_then_fails_on_doctored_partition(spark, wh_conf):
    from delta.tables import DeltaTable

    from vtag.jobs.warehouse.tables import table_path

    mix = ["游戏"] * 6 + ["电影"] * 4
    _write_day(spark, wh_conf, "2024-03-01", mix, n_quarantine=0)
    run_id = _write_day(spark, wh_conf, "2024-03-02", mix[1:] + ["电影"], n_quarantine=0)

    [rep] = check_days(spark, wh_conf, ["2024-03-02"])
    assert rep.ok, [c.detail for c in rep.failures()]
    checks = _by_name(rep)
    assert rep.run_id == run_id
    assert checks["drift"].ok and checks["drift"].value < 0.1
    assert checks["invariant"].ok and checks["written_by_run"].ok

    # doctor: delete two tagged rows after the run
    DeltaTable.forPath(spark, table_path(wh_conf, "video_tags")).delete("dt = DATE'2024-03-02' AND video_id IN ('v0', 'v1')")
    [rep] = check_days(spark, wh_conf, ["2024-03-02"])
    failed = {c.name: c.detail for c in rep.failures()}
    assert set(failed) == {"invariant", "run_counts"}, failed
    assert "rows read 10 != 8 rows in video_tags + 0 rows in video_tags_quarantine" in failed["invariant"]
    assert "partition changed after the run" in failed["run_counts"]


@pytest.mark.spark
@pytest.mark.slow
def test_quality_gate_rate_drift_status_missing_taxonomy(spark, wh_conf):
    _write_day(spark, wh_conf, "2024-04-01", ["游戏"] * 9 + ["电影"])
    _write_day(spark, wh_conf, "2024-04-02", ["电影"] * 8 + ["游戏"] * 2, n_quarantine=2)  # drift + 2/12 quarantined
    _write_day(spark, wh_conf, "2024-04-03", ["电影"] * 3, status="failed")
    reports = {r.dt: r for r in check_days(spark, wh_conf, day_range("2024-04-01", "2024-04-04"),
                                            max_quarantine_rate=0.1, max_drift=0.2, expect_taxonomy_version="tv2")}
    first = _by_name(reports["2024-04-01"])
    assert first["drift"].ok is None and "previous day" in first["drift"].detail
    assert first["taxonomy"].ok is False and "10 of 10 rows are not at taxonomy version tv2" in first["taxonomy"].detail

    second = {c.name: c for c in reports["2024-04-02"].failures()}
    assert set(second) == {"quarantine_rate", "drift", "taxonomy"}
    assert "quarantine rate 0.1667 (2/12) is above the threshold 0.1" in second["quarantine_rate"].detail
    assert second["drift"].value > 0.2 and "电影 80% (was 10%)" in second["drift"].detail

    third = reports["2024-04-03"].failures()
    assert [c.name for c in third] == ["status"] and "'failed': boom" in third[0].detail
    fourth = reports["2024-04-04"].failures()
    assert [c.name for c in fourth] == ["run"] and "no `tag` run in tag_runs for 2024-04-04" in fourth[0].detail

    # a later retag run rewrote a day: the tag run's counts still hold, written_by_run is skipped
    _write_day(spark, wh_conf, "2024-04-01", ["游戏"] * 9 + ["电影"], run_id="retag-1", job="retag", version="tv2",
               started=datetime(2024, 5, 1, tzinfo=timezone.utc))
    [rep] = check_days(spark, wh_conf, ["2024-04-01"], max_drift=None, expect_taxonomy_version="tv2")
    assert rep.ok, [c.detail for c in rep.failures()]
    assert rep.run_id == "tag-2024-04-01-x" and _by_name(rep)["written_by_run"].ok is None


@pytest.mark.spark
@pytest.mark.slow
def test_vtag_quality_cli_exit_codes_and_json(spark, wh_conf, capsys):
    from vtag.jobs.pipeline.quality import _arg_parser, main

    _write_day(spark, wh_conf, "2024-06-01", ["游戏"] * 5, n_quarantine=1)
    wh = wh_conf["warehouse"]

    def run(*argv):
        args = _arg_parser().parse_args(list(argv))
        return main(args), capsys.readouterr()

    rc, out = run("--date", "2024-06-01", "--warehouse", wh, "--max-quarantine-rate", "0.5", "--json")
    report = json.loads(out.out)
    assert rc == 0 and report["ok"] and report["days"][0]["run_id"] == "tag-2024-06-01-x"

    rc, out = run("--date", "2024-06-01", "--warehouse", wh, "--max-quarantine-rate", "0.1")
    assert rc == 1
    assert "vtag quality: FAILED 2024-06-01 quarantine_rate: quarantine rate 0.1667 (1/6) is above" in out.err
    assert "FAIL quarantine_rate" in out.out

    rc, out = run("--date", "2024-13-01", "--warehouse", wh)
    assert rc == 2 and "vtag quality:" in out.err
    assert isinstance(_arg_parser(), argparse.ArgumentParser)
