"""The vtag DAGs under a real Airflow 3: parsing, structure, timetable, Params, month mapping."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone

import pytest

pytestmark = pytest.mark.airflow

NIGHTLY_EDGES = {
    "resolve": {"wait_for_dump", "tag", "quality_gate", "maintenance_due", "optimize"},
    "wait_for_dump": {"tag"},
    "tag": {"quality_gate"},
    "quality_gate": {"maintenance_due"},
    "maintenance_due": {"optimize"},
    "optimize": set(),
}
RETAG_EDGES = {
    "resolve": {"plan", "months", "retag_month", "verify"},
    "plan": {"months"},
    "months": {"retag_month"},
    "retag_month": {"verify"},
    "verify": set(),
}


def _edges(dag):
    return {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}


def test_dagbag_loads_the_dags_without_errors_or_heavy_imports(dagbag):
    assert dagbag.import_errors == {}
    assert {"vtag_nightly", "vtag_retag", "vtag_retrain"} <= set(dagbag.dag_ids)
    heavy = [m for m in ("torch", "pyspark", "vtag", "jobs", "models", "hierarchy") if m in sys.modules]
    assert heavy == [], f"parsing the DAGs imported {heavy}"


def test_nightly_structure(dagbag):
    import _common as common
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.get_dag("vtag_nightly")
    assert _edges(dag) == NIGHTLY_EDGES
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.catchup is True and dag.max_active_runs == common.MAX_ACTIVE_RUNS
    assert {"date", "dump_root", "warehouse", "bundle", "max_quarantine_rate", "max_drift", "maintenance"} <= set(
        dag.params.keys()
    )

    sensor = dag.get_task("wait_for_dump")
    assert sensor.mode == "reschedule" and 0 < sensor.timeout <= 24 * 3600

    tag = dag.get_task("tag")
    assert isinstance(tag, SparkSubmitOperator)
    assert tag._spark_binary == common.SPARK_SUBMIT and tag._spark_binary.endswith(".venv/bin/spark-submit")
    assert tag.application.endswith("airflow_dags/spark_apps/vtag_app.py")
    assert tag._conn_id == common.SPARK_CONN_ID
    assert tag.env_vars["PYSPARK_PYTHON"].endswith(".venv/bin/python")
    assert tag.retries >= 2 and tag.retry_exponential_backoff == 2.0 and tag.max_retry_delay

    assert dag.get_task("maintenance_due").task_type.lower().startswith("_shortcircuit")


def test_nightly_timetable_makes_the_dump_date_the_data_interval_start(dagbag):
    import _common as common
    from airflow.models.backfill import _get_info_list
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    dag = dagbag.get_dag("vtag_nightly")
    sdag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))  # what the scheduler sees
    start = datetime(2024, 3, 1, tzinfo=timezone.utc)
    first = sdag.timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest=start, latest=None, catchup=True)
    )
    assert first.data_interval.start == start and first.data_interval.end == start + timedelta(days=1)
    assert first.run_after == start + timedelta(days=1)  # runs once the day is over
    assert common.dump_date({}, first.data_interval.start) == "2024-03-01"
    assert common.dump_date({"date": "2024-02-29"}, first.data_interval.start) == "2024-02-29"
    with pytest.raises(ValueError, match='Param "date"'):
        common.dump_date({}, None)

    # what `airflow backfill create --dag-id vtag_nightly --from-date 2024-03-01 --to-date 2024-03-03` creates
    infos = _get_info_list(from_date=start, to_date=start + timedelta(days=2), reverse=False, dag=sdag)
    assert [common.dump_date({}, i.data_interval.start) for i in infos] == ["2024-03-01", "2024-03-02", "2024-03-03"]


def test_resolve_nightly_params_over_variables_over_job_conf(tmp_path):
    import _common as common

    variables = {"vtag_warehouse": str(tmp_path / "wh-var"), "vtag_max_drift": "0.3"}
    params = {"date": None, "dump_root": str(tmp_path / "dumps"), "bundle": "bundles/x", "maintenance": "auto",
              "conf": ["tag_partitions=2", "spark.sql.shuffle.partitions=3"], "max_quarantine_rate": 0.2}
    sunday = datetime(2024, 3, 3, tzinfo=timezone.utc)
    s = common.resolve_nightly(params, sunday, variables.get)
    assert s["date"] == "2024-03-03" and s["maintenance_due"] is True
    assert s["warehouse"] == str(tmp_path / "wh-var")  # Variable
    assert s["bundle"] == str(common.REPO / "bundles/x")  # Param, made absolute against VTAG_HOME
    assert s["max_quarantine_rate"] == 0.2 and s["max_drift"] == 0.3
    assert s["marker"] == f"{tmp_path}/dumps/dt=2024-03-03/_SUCCESS"
    assert s["tag_args"][:3] == ["tag", "--date", "2024-03-03"]
    assert ["--conf", "tag_partitions=2"] == s["tag_args"][-4:-2]
    assert s["spark_conf"]["spark.sql.shuffle.partitions"] == "3"
    assert s["spark_conf"]["spark.pyspark.python"] == common.PYTHON_BIN
    # Delta's jars as the CLI's session picks them (vtag.jobs.spark.jars.delta_jars): the venv's folder, else Maven
    if s["jars"] is None:
        assert s["packages"].startswith("io.delta:delta-spark_")
    else:
        assert s["packages"] is None and all(j.endswith(".jar") for j in s["jars"].split(","))
    assert s["quality_args"][:3] == ["quality", "--date", "2024-03-03"]
    assert "--where" in s["maintain_args"] and "dt >= '2024-02-26'" in s["maintain_args"][s["maintain_args"].index("--where") + 1]
    monday = common.resolve_nightly({**params, "maintenance": "auto"}, sunday + timedelta(days=1), variables.get)
    assert monday["maintenance_due"] is False
    assert common.resolve_nightly({**params, "maintenance": "always"}, sunday + timedelta(days=1), variables.get)[
        "maintenance_due"
    ]


def test_retag_structure(dagbag):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    dag = dagbag.get_dag("vtag_retag")
    assert _edges(dag) == RETAG_EDGES
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: triggered by hand only
    assert {"from_taxonomy", "to_taxonomy", "bundle", "start", "end", "dry_run"} <= set(dag.params.keys())
    mapped = dag.get_task("retag_month")
    assert isinstance(mapped, MappedOperator)
    assert set(mapped.expand_input.value) == {"application_args"}
    assert mapped.partial_kwargs["max_active_tis_per_dagrun"] == 2 or mapped.max_active_tis_per_dagrun == 2


def test_month_windows():
    import _retag as retag

    assert retag.month_windows("2024-01-15", "2024-03-10") == [
        ("2024-01-15", "2024-01-31"), ("2024-02-01", "2024-02-29"), ("2024-03-01", "2024-03-10")]
    assert retag.month_windows("2023-12-31", "2024-01-01") == [("2023-12-31", "2023-12-31"), ("2024-01-01", "2024-01-01")]
    assert retag.month_windows("2024-06-05", "2024-06-05") == [("2024-06-05", "2024-06-05")]
    with pytest.raises(ValueError):
        retag.month_windows("2024-02-02", "2024-02-01")


def test_resolve_retag_builds_the_cli_of_issue_7(tmp_path):
    import _common as common
    import _retag as retag

    params = {"from_taxonomy": "conf/taxonomy/demo-v1.yaml", "to_taxonomy": "conf/taxonomy/demo-v2.yaml",
              "bundle": str(tmp_path / "b2"), "start": "2024-01-30", "end": "2024-02-02", "dry_run": True,
              "warehouse": str(tmp_path / "wh")}
    s = retag.resolve_retag(params, lambda name: None)
    v1, v2 = (str(common.REPO / f"conf/taxonomy/demo-{v}.yaml") for v in ("v1", "v2"))
    assert s["plan_args"][:11] == ["retag", "plan", "--from", v1, "--to", v2, "--start", "2024-01-30", "--end",
                                   "2024-02-02", "--warehouse"]
    assert s["plan_args"][-1] == "--json" and "--job-conf" in s["plan_args"]
    assert [a[a.index("--start") + 1: a.index("--start") + 4] for a in s["month_args"]] == [
        ["2024-01-30", "--end", "2024-01-31"], ["2024-02-01", "--end", "2024-02-02"]]
    assert all(a[:2] == ["retag", "run"] and "--bundle" in a and a[-1] == "--dry-run" for a in s["month_args"])
    assert "--expect-taxonomy" in s["verify_args"] and v2 in s["verify_args"]
    with pytest.raises(ValueError, match="needs the Params"):
        retag.resolve_retag({**params, "bundle": ""}, lambda name: None)


def test_retag_dag_run_maps_one_task_per_month(dagbag, tmp_path):
    """A real run of vtag_retag with the CLI tasks marked successful: one retag_month per month."""
    from airflow.utils.state import DagRunState, TaskInstanceState

    dag = dagbag.get_dag("vtag_retag")
    conf = {"from_taxonomy": "conf/taxonomy/demo-v1.yaml", "to_taxonomy": "conf/taxonomy/demo-v2.yaml",
            "bundle": str(tmp_path / "b2"), "start": "2024-01-15", "end": "2024-03-10", "dry_run": False}
    dr = dag.test(logical_date=datetime(2024, 4, 1, tzinfo=timezone.utc), run_conf=conf,
                  mark_success_pattern="plan|retag_month|verify")
    assert dr.state == DagRunState.SUCCESS
    tis = [ti for ti in dr.get_task_instances() if ti.task_id == "retag_month"]
    assert sorted(ti.map_index for ti in tis) == [0, 1, 2]
    assert all(ti.state == TaskInstanceState.SUCCESS for ti in tis)
