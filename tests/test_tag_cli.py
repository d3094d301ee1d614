"""The tag job through its command line, in separate processes: local-cluster mode (executors in
their own JVMs, as on a real cluster), a run killed mid-write, and two days tagged at once.

The kill test runs in the default suite (one real SIGKILL of the driver process; the runs before and
after it are the same command line run in the test's process, on the shared session); the others are
marked ``cluster`` and run with `make test-cluster` (several JVMs at once; minutes on 2 cores)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.builders import dump_rows, write_dump_day

pytestmark = [pytest.mark.spark, pytest.mark.slow]

VTAG = [sys.executable, "-m", "vtag.jobs.cli"]


def _cli(args, wh, taxonomy, bundle, dump, extra=()):
    return VTAG + ["tag", *args, "--dump-root", str(dump), "--bundle", str(bundle), "--warehouse", str(wh),
                   "--taxonomy", str(taxonomy), "--conf", "spark.ui.enabled=false", *extra]


def _delta(wh, table):
    from deltalake import DeltaTable

    return DeltaTable(str(Path(wh) / table))


def _day_rows(wh, table, dt):
    t = _delta(wh, table).to_pyarrow_table(partitions=[("dt", "=", dt)])
    return t.to_pylist()


@pytest.fixture()
def dump(tmp_path):
    root = tmp_path / "dump"
    for i, dt in enumerate(["2026-11-20", "2026-11-21", "2026-11-22"]):
        good, bad = dump_rows(f"d{i}", 40)
        write_dump_day(root, dt, good + [r for r, _ in bad])
    return root


GOOD, BAD = 40, len(dump_rows("x", 40)[1])  # rows per dump day: good ones and one of every bad kind


@pytest.mark.cluster
def test_local_cluster_two_executors(tmp_path, dump, tiny_bundle, tiny_taxonomy_path):
    wh = tmp_path / "wh"
    cmd = _cli(["--date", "2026-11-20", "--json"], wh, tiny_taxonomy_path, tiny_bundle, dump,
               ["--conf", "master=local-cluster[2,1,2048]", "--conf", "spark.driver.memory=1g",
                "--conf", "tag_partitions=4"])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["status"] == "succeeded"
    assert res["rows_read"] == res["rows_tagged"] + res["rows_quarantined"] == GOOD + BAD
    assert len(_day_rows(wh, "video_tags", "2026-11-20")) == res["rows_tagged"] == GOOD
    reasons = sorted(r["reason"] for r in _day_rows(wh, "video_tags_quarantine", "2026-11-20"))
    assert reasons == sorted(reason for _, reason in dump_rows("d0", 40)[1])


def _in_process(argv, spark, monkeypatch, capsys) -> tuple[int, str, str]:
    """``vtag`` + ``argv`` (from :func:`_cli`) run by the CLI's ``main`` in this process, on the shared session."""
    import vtag.jobs.spark.session
    from vtag.jobs.cli import main

    assert argv[: len(VTAG)] == VTAG
    monkeypatch.setattr(vtag.jobs.spark.session, "build_session", lambda conf: spark)
    capsys.readouterr()
    rc = main(argv[len(VTAG):])
    out, err = capsys.readouterr()
    return rc, out, err


def test_killed_run_leaves_previous_version_and_rerun_succeeds(tmp_path, dump, tiny_bundle, tiny_taxonomy_path,
                                                               spark, monkeypatch, capsys, vtag_spark_args):
    wh = tmp_path / "wh"
    base = ["--date", "2026-11-21"]
    # the first run is a two-day backfill in one session (--end)
    rc, out, err = _in_process(_cli(base + ["--end", "2026-11-22"], wh, tiny_taxonomy_path, tiny_bundle, dump),
                               spark, monkeypatch, capsys)
    assert rc == 0, err[-3000:]
    assert [ln.split(":")[0] for ln in out.strip().splitlines()[-2:]] == ["2026-11-21", "2026-11-22"]
    assert len(_day_rows(wh, "video_tags", "2026-11-22")) == GOOD
    before_version = _delta(wh, "video_tags").version()
    before = sorted(r["video_id"] for r in _day_rows(wh, "video_tags", "2026-11-21"))

    # second run: kill it (whole process group: driver JVM and Python workers) as soon as it has
    # written a data file of the new version but before that version is committed
    part_dir = wh / "video_tags" / "dt=2026-11-21"
    old_files = set(os.listdir(part_dir))
    proc = subprocess.Popen(_cli(base, wh, tiny_taxonomy_path, tiny_bundle, dump,
                                 ["--conf", "tag_partitions=6", *vtag_spark_args]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, start_new_session=True)
    killed_mid_write = False
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        new = {f for f in os.listdir(part_dir) if f.endswith(".parquet")} - old_files
        if new:
            os.killpg(proc.pid, signal.SIGKILL)
            killed_mid_write = _delta(wh, "video_tags").version() == before_version
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed_mid_write, "the run finished before a data file appeared; no mid-write kill happened"
    assert _delta(wh, "video_tags").version() == before_version
    assert sorted(r["video_id"] for r in _day_rows(wh, "video_tags", "2026-11-21")) == before

    runs = {r["run_id"]: r for r in _delta(wh, "tag_runs").to_pyarrow_table().to_pylist()}
    (killed,) = [r for r in runs.values() if r["status"] == "started"]  # the killed run has its row

    rc, _, err = _in_process(_cli(base, wh, tiny_taxonomy_path, tiny_bundle, dump), spark, monkeypatch, capsys)
    assert rc == 0, err[-3000:]
    assert sorted(r["video_id"] for r in _day_rows(wh, "video_tags", "2026-11-21")) == before
    runs = {r["run_id"]: r for r in _delta(wh, "tag_runs").to_pyarrow_table().to_pylist()}
    assert runs[killed["run_id"]]["status"] == "killed"  # recorded by the rerun, which found it dead
    _assert_one_run(wh, "2026-11-21")


def _assert_one_run(wh, dt):
    """Both tables' rows of ``dt`` come from one run, recorded succeeded with these counts; ids unique."""
    tags, quar = _day_rows(wh, "video_tags", dt), _day_rows(wh, "video_tags_quarantine", dt)
    writers = {r["run_id"] for r in tags} | {r["run_id"] for r in quar}
    assert len(writers) == 1, writers
    assert len({r["video_id"] for r in tags}) == len(tags)
    run = {r["run_id"]: r for r in _delta(wh, "tag_runs").to_pyarrow_table().to_pylist()}[writers.pop()]
    assert run["status"] == "succeeded" and run["rows_read"] == len(tags) + len(quar) == GOOD + BAD
    return run


@pytest.mark.cluster
def test_sigkill_between_the_commits_then_repair_finishes_the_run(tmp_path, dump, tiny_bundle, tiny_taxonomy_path):
    wh = tmp_path / "wh"
    base = ["--date", "2026-11-20"]
    first = subprocess.run(_cli(base, wh, tiny_taxonomy_path, tiny_bundle, dump), capture_output=True, text=True,
                           timeout=600, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    old = _assert_one_run(wh, "2026-11-20")["run_id"]
    # the driver SIGKILLs itself right after the quarantine commit (VTAG_FAULT_INJECT, jobs/pipeline/publish.py)
    env = {**os.environ, "VTAG_FAULT_INJECT": "after_commit:video_tags_quarantine=kill"}
    killed = subprocess.run(_cli(base, wh, tiny_taxonomy_path, tiny_bundle, dump), capture_output=True, text=True,
                            timeout=600, cwd=tmp_path, env=env)
    assert killed.returncode == -signal.SIGKILL
    (victim,) = [r for r in _delta(wh, "tag_runs").to_pyarrow_table().to_pylist() if r["status"] == "started"]
    assert {r["run_id"] for r in _day_rows(wh, "video_tags_quarantine", "2026-11-20")} == {victim["run_id"]}
    assert {r["run_id"] for r in _day_rows(wh, "video_tags", "2026-11-20")} == {old}  # the mixed day a kill leaves
    repair = subprocess.run(_cli(base + ["--repair", "--json"], wh, tiny_taxonomy_path, tiny_bundle, dump),
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert repair.returncode == 0, repair.stderr[-3000:]
    report = json.loads(repair.stdout.strip().splitlines()[-1])
    assert [(r["run_id"], r["action"], r["status"]) for r in report["runs"]] == [
        (victim["run_id"], "finished", "succeeded")]
    assert _assert_one_run(wh, "2026-11-20")["run_id"] == victim["run_id"]


@pytest.mark.cluster
def test_two_days_at_once(tmp_path, dump, tiny_bundle, tiny_taxonomy_path):
    wh = tmp_path / "wh"
    procs = [
        subprocess.Popen(_cli(["--date", d], wh, tiny_taxonomy_path, tiny_bundle, dump), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        for d in ("2026-11-20", "2026-11-22")
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    for d in ("2026-11-20", "2026-11-22"):
        assert len(_day_rows(wh, "video_tags", d)) == GOOD
        assert len(_day_rows(wh, "video_tags_quarantine", d)) == BAD
    runs = _delta(wh, "tag_runs").to_pyarrow_table().to_pylist()
    assert sorted((r["dt"].isoformat(), r["status"]) for r in runs) == [
        ("2026-11-20", "succeeded"), ("2026-11-22", "succeeded")]
