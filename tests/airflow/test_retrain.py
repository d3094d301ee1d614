"""``vtag_retrain`` under a real Airflow 3: structure, the resolved day windows and arguments, and a
real ``dag.test()`` that trains (``vtag train``) and promotes (``vtag promote``) through the project's
venv: a first promotion, a rerun that skips, and a candidate the metrics reject."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from project_cli import PROJECT_VENV, TAXONOMY, TINY_MODEL, project

pytestmark = pytest.mark.airflow

EDGES = {
    "resolve": {"wait_for_labels", "choose_trainer", "train", "train_on_spark", "promote"},
    "wait_for_labels": {"choose_trainer"},
    "choose_trainer": {"train", "train_on_spark"},
    "train": {"promote"},
    "train_on_spark": {"promote"},
    "promote": set(),
}
DAYS = [f"2024-05-{d:02d}" for d in range(1, 11)]


def _edges(dag):
    return {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}


def test_retrain_structure(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.get_dag("vtag_retrain")
    assert _edges(dag) == EDGES
    assert isinstance(dag.timetable, CronDataIntervalTimetable) and dag.timetable.expression == "0 6 * * 1"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert {"end", "labels_root", "bundle", "train_days", "holdout_days", "min_gain", "train_args"} <= set(dag.params)
    assert dag.get_task("wait_for_labels").mode == "reschedule"
    assert dag.get_task("promote").retries == 1 and dag.get_task("promote").trigger_rule == "none_failed_min_one_success"
    assert dag.get_task("train_on_spark").application.endswith("spark_apps/vtag_app.py")


def test_resolve_retrain_windows_and_arguments(tmp_path):
    import _common as common
    import _retrain as retrain

    variables = {"vtag_labels_root": str(tmp_path / "labeled"), "vtag_holdout_days": "7"}
    params = {"bundle": str(tmp_path / "bundles" / "prod"), "train_days": 28, "conf": [],
              "train_args": ["--max-minutes", "600"]}
    monday = datetime(2024, 3, 11, 6, tzinfo=timezone.utc)  # the interval ends on a Monday: labels up to Sunday
    s = retrain.resolve_retrain(params, monday, variables.get)
    assert s["end"] == "2024-03-10"
    assert s["holdout_dates"] == "2024-03-04..2024-03-10"
    assert s["train_dates"] == "2024-02-05..2024-03-03"  # 28 days before the held-out week
    assert s["marker"] == f"{tmp_path}/labeled/dt=2024-03-10/_SUCCESS"
    assert s["out"] == str(tmp_path / "bundles" / "prod-2024-03-10")
    t = s["train_args"]
    assert t[:2] == ["train", "--config"] and t[2] == str(common.REPO / "conf/model/text-context.yaml")
    assert t[t.index("--dates") + 1] == s["train_dates"] and t[t.index("--out") + 1] == s["out"]
    assert t[-2:] == ["--max-minutes", "600"] and "--drop-checkpoint" in t and "--processes" not in t
    assert s["train_on_spark"] is False and s["spark_conf"]["spark.pyspark.python"]
    spark = retrain.resolve_retrain({**params, "train_processes": 4}, monday, variables.get)
    assert spark["train_on_spark"] is True and spark["train_args"][-5:] == [
        "--processes", "4", "--cluster", "--max-minutes", "600"]
    assert "spark.task.resource.gpu.amount" not in spark["spark_conf"]
    gpu = retrain.resolve_retrain({**params, "train_processes": 4, "train_args": ["--use-gpu"]}, monday, variables.get)
    assert gpu["spark_conf"]["spark.task.resource.gpu.amount"] == "1"  # a whole GPU for each rank
    p = s["promote_args"]
    assert p[:3] == ["promote", "--link", str(tmp_path / "bundles" / "prod")]
    assert p[p.index("--dates") + 1] == s["holdout_dates"] and p[p.index("--candidate") + 1] == s["out"]
    assert p[p.index("--min-gain") + 1] == "0.0" and p[-1] == "--json"
    assert p[p.index("--keep") + 1] == "3"  # the rollback chain's three latest bundles stay
    assert "--keep" not in retrain.resolve_retrain({**params, "keep_bundles": 0}, monday, variables.get)["promote_args"]
    with pytest.raises(ValueError, match="keep_bundles"):
        retrain.resolve_retrain({**params, "keep_bundles": -1}, monday, variables.get)
    # every earlier day trains with train_days 0; Param end wins over the interval
    s0 = retrain.resolve_retrain({**params, "train_days": 0, "end": "2024-01-31"}, monday, variables.get)
    assert s0["train_dates"] == "..2024-01-24" and s0["holdout_dates"] == "2024-01-25..2024-01-31"
    # without a Variable the check holds out the last two days
    s2 = retrain.resolve_retrain(params, monday, {"vtag_labels_root": str(tmp_path / "labeled")}.get)
    assert s2["holdout_dates"] == "2024-03-09..2024-03-10" and s2["train_dates"] == "2024-02-10..2024-03-08"
    with pytest.raises(ValueError, match="no labeled data"):
        retrain.resolve_retrain(params, monday, lambda name: None)
    with pytest.raises(ValueError, match="local"):
        retrain.resolve_retrain({**params, "bundle": "s3a://b/prod"}, monday, variables.get)
    with pytest.raises(ValueError, match="holdout_days"):
        retrain.resolve_retrain({**params, "holdout_days": 0}, monday, variables.get)
    with pytest.raises(ValueError, match="Param \"end\""):
        retrain.resolve_retrain(params, None, variables.get)


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """Ten labeled days (24 toy rows of the tiny taxonomy each), written by the project's venv."""
    root = tmp_path_factory.mktemp("vtag-retrain")
    script = (
        "import sys, pandas as pd\n"
        "from vtag.hierarchy.taxonomy import Taxonomy\n"
        "from vtag.models.data import toy_labeled_frame, write_dump\n"
        "tax = Taxonomy.load(sys.argv[1]); days = sys.argv[3].split(',')\n"
        "frame = toy_labeled_frame(tax, n=24 * len(days), seed=5)\n"
        "for i, day in enumerate(days):\n"
        "    part = frame.iloc[24 * i: 24 * (i + 1)].copy()\n"
        "    part['upload_ts'] = pd.Timestamp(day, tz='UTC') + pd.to_timedelta(range(24), unit='h')\n"
        "    write_dump(part, sys.argv[2], day)\n"
    )
    project([str(PROJECT_VENV / "bin" / "python"), "-c", script, str(TAXONOMY), str(root / "labeled"), ",".join(DAYS)])
    model = root / "tiny-model.yaml"
    model.write_text(TINY_MODEL, encoding="utf-8")
    return root, model


@pytest.mark.slow
def test_retrain_dag_trains_promotes_skips_a_rerun_and_keeps_the_bundle_on_a_rejection(dagbag, labeled, monkeypatch):
    from airflow.utils.state import DagRunState, TaskInstanceState

    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[2]"}))

    root, model = labeled
    link, bundles = root / "bundles" / "prod", root / "bundles"
    conf = {"labels_root": str(root / "labeled"), "bundle": str(link), "train_config": str(model),
            "taxonomy": str(TAXONOMY), "train_days": 0, "holdout_days": 3,
            "train_args": ["--epochs", "1", "--seed", "0", "--device", "cpu", "--threads", "1"]}
    dag = dagbag.get_dag("vtag_retrain")

    def run(logical: datetime, **extra):
        dr = dag.test(logical_date=logical, run_conf={**conf, **extra})
        return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}

    # 1. no bundle yet: trained on ..05-07, scored on 05-08..05-10, promoted
    dr, states = run(datetime(2024, 5, 13, 6, tzinfo=timezone.utc), end="2024-05-10")
    assert dr.state == DagRunState.SUCCESS, states
    first = bundles / "prod-2024-05-10"
    assert link.is_symlink() and link.resolve() == first.resolve() and (first / "model.safetensors").is_file()
    assert not (first / "checkpoint").exists()  # vtag train --drop-checkpoint: a bundle for production needs none
    log = [json.loads(line) for line in (bundles / "prod.promotions.jsonl").read_text().splitlines()]
    assert [e["decision"] for e in log] == ["promoted"] and log[0]["dates"] == "2024-05-08..2024-05-10"
    assert log[0]["from"] is None and log[0]["rows"] == 3 * 24

    # 2. the same week again: the link already points at its bundle, so nothing trains or switches
    dr, states = run(datetime(2024, 5, 14, 6, tzinfo=timezone.utc), end="2024-05-10")
    assert dr.state == DagRunState.SUCCESS
    assert states["train"] == states["train_on_spark"] == states["promote"] == TaskInstanceState.SKIPPED

    # 3. a candidate asked for a gain no model can show: rejected, the run fails, the link stays
    dr, states = run(datetime(2024, 5, 15, 6, tzinfo=timezone.utc), end="2024-05-09", min_gain=1.0)
    assert states["train"] == TaskInstanceState.SUCCESS and states["promote"] == TaskInstanceState.FAILED
    assert dr.state == DagRunState.FAILED
    assert link.resolve() == first.resolve() and (bundles / "prod-2024-05-09" / "model.safetensors").is_file()
    log = [json.loads(line) for line in (bundles / "prod.promotions.jsonl").read_text().splitlines()]
    assert [e["decision"] for e in log] == ["promoted", "rejected"]
    assert log[1]["failed"] and log[1]["from"] == str(first.resolve()) and log[1]["to"] == str(first.resolve())

    # 4. trained on Spark (spark-submit of vtag train --processes 2 --cluster: DDP over two Spark tasks) and
    # promoted with keep_bundles 1: the rejected week's folder goes; the bundle it replaced stays (a
    # nightly run that began before the switch may read it), and the log says what was deleted
    dr, states = run(datetime(2024, 5, 16, 6, tzinfo=timezone.utc), end="2024-05-08", min_gain=-1.0, keep_bundles=1,
                     train_processes=2)
    assert dr.state == DagRunState.SUCCESS, states
    assert states["train"] == TaskInstanceState.SKIPPED and states["train_on_spark"] == TaskInstanceState.SUCCESS
    card = (bundles / "prod-2024-05-08" / "MODEL_CARD.md").read_text()
    assert "x2" in card and not (bundles / "prod-2024-05-08" / "checkpoint").exists()
    assert link.resolve() == (bundles / "prod-2024-05-08").resolve()
    assert not (bundles / "prod-2024-05-09").exists() and (first / "model.safetensors").is_file()
    log = [json.loads(line) for line in (bundles / "prod.promotions.jsonl").read_text().splitlines()]
    assert [e["decision"] for e in log] == ["promoted", "rejected", "promoted", "pruned"]
    assert log[-1]["removed"] == [str((bundles / "prod-2024-05-09").resolve())]
