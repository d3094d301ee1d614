"""A real ``dag.test()`` of ``vtag_nightly`` for one day against local Spark, then a doctored partition.

The tiny world is made through the project venv's CLI only (``vtag generate``, ``vtag train``): this
process (Airflow's venv) never imports the project. The tag task really spark-submits
``spark_apps/vtag_app.py``; the quality gate really runs ``vtag quality``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from project_cli import PROJECT_VENV, TAXONOMY, TINY_MODEL
from project_cli import project as _project
from project_cli import vtag as _vtag

pytestmark = [pytest.mark.airflow, pytest.mark.spark, pytest.mark.slow]

DAY = "2024-05-07"  # a Tuesday: the weekly OPTIMIZE is skipped
LOGICAL = datetime(2024, 5, 8, tzinfo=timezone.utc)  # a manual run at D+1 00:00 covers [D, D+1)
# small data: no generated code, Delta's log replay in one task (as tests/conftest.py TEST_SPARK_CONF)
SMALL_SPARK = ["spark.sql.shuffle.partitions=2", "spark.default.parallelism=2", "spark.driver.memory=1g",
               "spark.sql.codegen.wholeStage=false", "spark.sql.codegen.factoryMode=NO_CODEGEN",
               "spark.databricks.delta.snapshotPartitions=1", "tag_partitions=1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two labeled days of a tiny synthetic dump (10% bad rows) and a 1-epoch text + context bundle
    trained on them (no image modality: the DAG is under test, not the model, and the workers skip
    timm's import)."""
    root = tmp_path_factory.mktemp("vtag-world")
    dumps, bundle = root / "dumps", root / "bundle"
    _vtag("generate", "--taxonomy", str(TAXONOMY), "--start", "2024-05-06", "--days", "2", "--rows-per-day", "40",
          "--labeled", "--bad-rate", "0.1", "--seed", "3", "--out", str(dumps),
          "--set", "cover.width=48", "--set", "cover.height=36",
          "--conf", "master=local[2]", "--conf", f"warehouse={root / 'gen-wh'}", *[a for kv in SMALL_SPARK[:-1] for a in ("--conf", kv)])
    cfg = root / "tiny-model.yaml"
    cfg.write_text(TINY_MODEL, encoding="utf-8")
    _vtag("train", "--config", str(cfg), "--data", str(dumps), "--out", str(bundle), "--taxonomy", str(TAXONOMY),
          "--epochs", "1", "--seed", "0", "--device", "cpu", "--threads", "1", "--no-progress")
    manifest = json.loads((dumps / f"dt={DAY}" / "_manifest.json").read_text(encoding="utf-8"))
    return {"root": root, "dumps": dumps, "bundle": bundle, "warehouse": root / "warehouse", "manifest": manifest}


def _delta_partition_rows(table: Path, day: str) -> int:
    """Rows of partition ``dt=day`` in the current version of a Delta table, from its log (stdlib only)."""
    live: dict[str, int] = {}
    for commit in sorted((table / "_delta_log").glob("*.json")):
        for line in commit.read_text(encoding="utf-8").splitlines():
            action = json.loads(line)
            if "add" in action:
                add = action["add"]
                if add.get("partitionValues", {}).get("dt") == day:
                    live[add["path"]] = json.loads(add.get("stats") or "{}").get("numRecords", -10**9)
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    return sum(live.values())


def test_nightly_dag_test_tags_one_day_then_the_gate_fails_on_a_doctored_partition(dagbag, world, monkeypatch):
    import _common as common
    from airflow.sdk.exceptions import AirflowFailException
    from airflow.utils.state import DagRunState, TaskInstanceState

    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[2]"}))
    dag = dagbag.get_dag("vtag_nightly")
    run_conf = {
        "dump_root": str(world["dumps"]),
        "warehouse": str(world["warehouse"]),
        "bundle": str(world["bundle"]),
        "taxonomy": str(TAXONOMY),
        "conf": SMALL_SPARK,
        "max_quarantine_rate": 0.5,
        "maintenance": "auto",
    }
    dr = dag.test(logical_date=LOGICAL, run_conf=run_conf)

    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states == {
        "resolve": TaskInstanceState.SUCCESS,
        "wait_for_dump": TaskInstanceState.SUCCESS,
        "tag": TaskInstanceState.SUCCESS,
        "quality_gate": TaskInstanceState.SUCCESS,
        "maintenance_due": TaskInstanceState.SUCCESS,
        "optimize": TaskInstanceState.SKIPPED,
    }, states
    assert dr.state == DagRunState.SUCCESS

    # that day's partition exists, and rows read = tagged + quarantined (counted from the Delta logs)
    wh = world["warehouse"]
    tagged = _delta_partition_rows(wh / "video_tags", DAY)
    quarantined = _delta_partition_rows(wh / "video_tags_quarantine", DAY)
    assert tagged > 0 and quarantined > 0
    assert tagged + quarantined == world["manifest"]["rows"]
    assert not (wh / "video_tags" / "dt=2024-05-06").exists()  # only the run's day

    # doctor the partition: delete three tagged rows behind the job's back (delta-rs, no JVM)
    _project([str(PROJECT_VENV / "bin" / "python"), "-c",
              "import sys, datetime, deltalake; t = deltalake.DeltaTable(sys.argv[1]); "
              "day = datetime.date.fromisoformat(sys.argv[2]); "
              "ids = sorted(t.to_pyarrow_table(filters=[('dt', '=', day)], columns=['video_id'])['video_id'].to_pylist())[:3]; "
              "t.delete(\"dt = '\" + sys.argv[2] + \"' AND video_id IN (\" + ', '.join(repr(i) for i in ids) + ')')",
              str(wh / "video_tags"), DAY])
    assert _delta_partition_rows(wh / "video_tags", DAY) == tagged - 3

    # the DAG's quality gate task, as the run would call it, now fails and says why
    settings = common.resolve_nightly({**run_conf, "date": DAY}, None, lambda name: None)
    gate = dag.get_task("quality_gate")
    with pytest.raises(AirflowFailException) as failed:
        gate.python_callable(settings["quality_args"], DAY)
    message = str(failed.value)
    assert "vtag quality gate failed" in message
    assert f"{DAY} invariant: rows read {tagged + quarantined} != {tagged - 3} rows in video_tags" in message
    assert f"{DAY} run_counts:" in message and "partition changed after the run" in message
