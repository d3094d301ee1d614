"""Operators' basics (#19 item 8): the Spark tasks run in a configurable pool, failures go to a
notifier hook, and a gated day emits ``video_tags`` Asset events (the table's and the day's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "airflow_dags"
SPARK_TASKS = {"vtag_nightly": {"tag", "quality_gate", "optimize"}, "vtag_retag": {"plan", "retag_month", "verify"}}


def _task_pool(task) -> str:
    partial = getattr(task, "partial_kwargs", None)
    return (partial or {}).get("pool") or task.pool


def test_spark_tasks_run_in_the_vtag_pool(dagbag):
    import _common as common

    assert common.SPARK_POOL == os.environ.get("VTAG_SPARK_POOL", "vtag_spark")
    for dag_id, spark_tasks in SPARK_TASKS.items():
        dag = dagbag.get_dag(dag_id)
        for task in dag.tasks:
            pool = _task_pool(task)
            if task.task_id in spark_tasks:
                assert pool == common.SPARK_POOL, (dag_id, task.task_id, pool)
            else:
                assert pool != common.SPARK_POOL, (dag_id, task.task_id, "not a Spark task")


def _parse_in_subprocess(env: dict[str, str], code: str) -> str:
    full = {**os.environ, **env, "PYTHONPATH": f"{DAGS}{os.pathsep}{Path(__file__).parent}"}
    proc = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_the_pool_and_its_slots_come_from_the_environment():
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "t = bag.get_dag('vtag_nightly').get_task('tag')\n"
        "import json; print(json.dumps([t.pool, t.pool_slots]))\n"
    )
    out = _parse_in_subprocess({"VTAG_SPARK_POOL": "spark_big", "VTAG_SPARK_POOL_SLOTS": "3"}, code)
    assert json.loads(out) == ["spark_big", 3]


def test_the_training_pool_comes_from_the_environment(dagbag):
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "print(bag.get_dag('vtag_retrain').get_task('train').pool)\n"
    )
    assert _parse_in_subprocess({"VTAG_TRAIN_POOL": "vtag_train"}, code) == "vtag_train"
    assert dagbag.get_dag("vtag_retrain").get_task("train").pool == "default_pool"  # unset: Airflow's default


def test_failure_callbacks_log_and_notify(tmp_path, caplog):
    import _common as common

    # the built-in one-line log
    class TI:
        dag_id, task_id, try_number = "vtag_nightly", "tag", 2

    ctx = {"task_instance": TI(), "run_id": "r1", "params": {"date": "2024-05-07"},
           "exception": RuntimeError("executor lost\nlong trace")}
    with caplog.at_level("ERROR"):
        common.log_failure(ctx)
    assert "vtag: FAILED dag=vtag_nightly task=tag run=r1 date=2024-05-07 try=2: executor lost" in caplog.text
    assert "long trace" not in caplog.text
    # notifiers by module:attribute; a bad entry is an error, not silence
    found = common.load_notifiers("notify_example:record, os.path:join")
    assert [f.__name__ for f in found] == ["record", "join"]
    with pytest.raises(ValueError, match="module:attribute"):
        common.load_notifiers("notify_example.record")
    with pytest.raises(ValueError, match="not callable"):
        common.load_notifiers("notify_example:NOT_CALLABLE")


def test_a_failed_run_calls_the_configured_notifier(tmp_path):
    """A real dag.test of vtag_nightly whose resolve fails (no such job conf): the DAG's tasks carry
    the notifier of VTAG_ON_FAILURE and the failure reaches it."""
    out = tmp_path / "notified.jsonl"
    code = (
        "from datetime import datetime, timezone\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "dag = bag.get_dag('vtag_nightly')\n"
        "names = [getattr(c, '__name__', type(c).__name__) for c in dag.get_task('tag').on_failure_callback]\n"
        "assert names == ['log_failure', 'record'], names\n"
        "dr = dag.test(logical_date=datetime(2024, 5, 8, tzinfo=timezone.utc),\n"
        f"             run_conf={{'job_conf': {str(tmp_path / 'missing.yaml')!r}}})\n"
        "print(dr.state)\n"
    )
    state = _parse_in_subprocess({"VTAG_ON_FAILURE": "notify_example:record", "VTAG_NOTIFY_FILE": str(out)}, code)
    assert state == "failed"
    calls = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(c["task_id"] == "resolve" and "missing.yaml" in c["exception"] for c in calls), calls


def test_a_gated_day_emits_the_table_and_day_assets(dagbag, monkeypatch, tmp_path):
    """dag.test of vtag_nightly with the Spark work marked done and the gate's CLI stubbed: the gate's
    Asset events carry the day, for downstream DAGs scheduled on ``video_tags`` or one day of it."""
    import _common as common
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    job_conf = tmp_path / "job.yaml"
    job_conf.write_text(f"dump_root: {tmp_path}/dumps\nwarehouse: {tmp_path}/wh\nbundle: {tmp_path}/b\n")
    monkeypatch.setattr(common, "quality_gate", lambda argv: {"ok": True, "checks": {}})
    dag = dagbag.get_dag("vtag_nightly")
    gate = dag.get_task("quality_gate")
    assert {getattr(o, "name", None) for o in gate.outlets} == {common.VIDEO_TAGS_ASSET_NAME, common.VIDEO_TAGS_DAY_ALIAS}
    dr = dag.test(logical_date=datetime(2024, 5, 8, tzinfo=timezone.utc),
                  run_conf={"job_conf": str(job_conf), "maintenance": "never"},
                  mark_success_pattern="wait_for_dump|^tag$")
    assert str(dr.state) == "success", [(ti.task_id, ti.state) for ti in dr.get_task_instances()]
    with create_session() as session:
        rows = (session.query(AssetModel.name, AssetModel.uri, AssetEvent.extra)
                .join(AssetEvent, AssetEvent.asset_id == AssetModel.id).all())
    by_name = {name: (uri, extra) for name, uri, extra in rows}
    table = by_name[common.VIDEO_TAGS_ASSET_NAME]
    assert table[0] == common.VIDEO_TAGS_URI and table[1]["dates"] == ["2024-05-07"] and table[1]["job"] == "tag"
    day = by_name[f"{common.VIDEO_TAGS_ASSET_NAME}/dt=2024-05-07"]
    assert day[0] == f"{common.VIDEO_TAGS_URI}/dt=2024-05-07" and day[1]["dt"] == "2024-05-07"


def test_days_between():
    import _common as common

    assert common.days_between("2024-02-28", "2024-03-01") == ["2024-02-28", "2024-02-29", "2024-03-01"]
