"""The settings of a ``vtag_retrain`` run: which labeled days train, which are held out, where the new
bundle goes and the ``vtag train`` / ``vtag promote`` argument lists. No Airflow import (the DAG file
and the tests call :func:`resolve_retrain`); the jobs' own code reads the job conf.

A run whose data interval ends on day E retrains on the labeled days up to E − 1: the last
``holdout_days`` of them are held out, the ``train_days`` before them train (0: every earlier day).
The bundle is written to ``<bundle_root>/<link name>-<last labeled day>`` and promoted over the link
(the nightly job's bundle) by ``vtag promote`` only where it is not worse on the held-out days.

``vtag promote --keep`` then deletes the bundle folders its log names beyond the ``keep_bundles``
latest of the rollback chain (the bundle the last switch replaced and the latest candidate stay too).

The held-out days are what the check costs: the bundle in production is that much older than the
labels. ``bench/retrain_replay.py`` measures it; two days (the default) keep the check on the
bundle that goes in while losing little of a bundle trained up to the last labeled day.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

try:  # the folder is on sys.path when Airflow parses it
    import _common as common
except ImportError:  # imported as a package (airflow_dags._retrain)
    from airflow_dags import _common as common

#: Variables read at run time (a run's Param of the same name, less ``vtag_``, wins)
VARIABLES = {
    "vtag_labels_root": "labeled dump root (dt=*/ with labels; default: the job conf's profiles.labels_root)",
    "vtag_train_config": "model config of the retrained bundle (default conf/model/text-context.yaml)",
    "vtag_bundle_root": "folder of the versioned bundles (default: the folder of the bundle link)",
    "vtag_train_days": "labeled days that train, before the held-out ones (default 56; 0: every earlier day)",
    "vtag_holdout_days": "latest labeled days held out to compare the bundles on (default 2)",
    "vtag_min_gain": "vtag promote --min-gain: least gain of each metric over the current bundle (default 0)",
    "vtag_train_processes": "N > 0: train on the Spark cluster (spark-submit, TorchDistributor over N processes; "
                            "add --use-gpu to train_args for one GPU each); 0 (default): on the Airflow worker",
    "vtag_keep_bundles": "vtag promote --keep: bundle folders kept in the rollback chain, older ones deleted "
                         "(default 3; 0: delete none)",
}
#: the Airflow pool of the training task (unset: Airflow's default pool); training is one heavy process
#: on the worker, so a pool of its own keeps it from running beside the nightly Spark drivers
TRAIN_POOL = os.environ.get("VTAG_TRAIN_POOL") or None


def train_pool_kwargs() -> dict[str, Any]:
    """``pool`` of the training task where ``VTAG_TRAIN_POOL`` names one."""
    return {"pool": TRAIN_POOL} if TRAIN_POOL else {}


DEFAULTS: dict[str, Any] = {
    "train_config": "conf/model/text-context.yaml",
    "train_days": 56,
    "holdout_days": 2,
    "min_gain": 0.0,
    "metrics": "leaf_acc,hf1",
    "keep_bundles": 3,
    "train_processes": 0,
}


def last_labeled_day(params: Mapping[str, Any], data_interval_end: datetime | None) -> date:
    """Param ``end`` when given, else the UTC day before the data interval's end."""
    if params.get("end"):
        return date.fromisoformat(str(params["end"]))
    if data_interval_end is None:
        raise ValueError("this run has no data interval: pass the last labeled day as the Param \"end\"")
    return data_interval_end.astimezone(timezone.utc).date() - timedelta(days=1)


def resolve_retrain(params: Mapping[str, Any], data_interval_end: datetime | None,
                    variable: Callable[[str], Any]) -> dict[str, Any]:
    """Everything a ``vtag_retrain`` run needs (Params > Variables > job conf), as plain JSON values.

    Parameters
    ----------
    params
        The run's Params.
    data_interval_end
        The end of the run's data interval (None for a manual run without one: Param ``end`` is needed).
    variable
        ``Variable.get``-like lookup of ``vtag_*`` Variables (None where unset).

    Returns
    -------
    dict
        ``end``, ``train_dates`` and ``holdout_dates`` (``vtag --dates`` ranges), ``labels_root``,
        ``marker`` (the last labeled day's ``_SUCCESS``), ``link``, ``out`` (the new bundle),
        ``train_args``, ``train_on_spark``, ``promote_args``, and the spark-submit ``spark_conf``,
        ``packages`` and ``jars`` of the job conf (:func:`_common.spark_submit_options`).
    """
    end = last_labeled_day(params, data_interval_end)
    holdout = int(common._pick(params, variable, "holdout_days", DEFAULTS["holdout_days"]))
    train_days = int(common._pick(params, variable, "train_days", DEFAULTS["train_days"]))
    if holdout < 1 or train_days < 0:
        raise ValueError(f"holdout_days must be >= 1 and train_days >= 0, got {holdout} and {train_days}")
    job_conf_path = common.abspath(common._pick(params, variable, "job_conf", common.DEFAULT_JOB_CONF))
    jc = common.read_job_conf(job_conf_path, common._overrides(params.get("conf"), "Param conf"))
    profiles = jc.get("profiles") or {}
    labels_root = common.abspath(common._pick(params, variable, "labels_root", profiles.get("labels_root")))
    link = common.abspath(common._pick(params, variable, "bundle", jc.get("bundle")))
    if not labels_root:
        raise ValueError(f"no labeled data: set the Param labels_root, the Variable vtag_labels_root or "
                         f"profiles.labels_root in {job_conf_path}")
    if not link or common._is_uri(link):
        raise ValueError(f"the bundle link must be a local (or mounted) path, got {link!r}")
    bundle_root = common.abspath(common._pick(params, variable, "bundle_root", str(Path(link).parent)))
    config = common.abspath(common._pick(params, variable, "train_config", DEFAULTS["train_config"]))
    taxonomy = common.abspath(common._pick(params, variable, "taxonomy", jc.get("taxonomy")))
    min_gain = float(common._pick(params, variable, "min_gain", DEFAULTS["min_gain"]))
    keep = int(common._pick(params, variable, "keep_bundles", DEFAULTS["keep_bundles"]))
    if keep < 0:
        raise ValueError(f"keep_bundles must be >= 0 (0: delete none), got {keep}")
    processes = int(common._pick(params, variable, "train_processes", DEFAULTS["train_processes"]))
    if processes < 0:
        raise ValueError(f"train_processes must be >= 0 (0: train on the Airflow worker), got {processes}")

    first_held = end - timedelta(days=holdout - 1)
    last_train = first_held - timedelta(days=1)
    train_from = "" if train_days == 0 else (last_train - timedelta(days=train_days - 1)).isoformat()
    train_dates = f"{train_from}..{last_train.isoformat()}"
    holdout_dates = f"{first_held.isoformat()}..{end.isoformat()}"
    out = str(Path(bundle_root) / f"{Path(link).name}-{end.isoformat()}")
    tax = ["--taxonomy", taxonomy] if taxonomy else []
    extra = [str(a) for a in (params.get("train_args") or [])]
    train_args = ["train", "--config", config, "--data", labels_root, "--dates", train_dates, "--out", out,
                  "--label", f"retrain-{end.isoformat()}", "--no-progress", "--drop-checkpoint", *tax,
                  *(["--processes", str(processes), "--cluster"] if processes else []), *extra]
    promote_args = ["promote", "--link", link, "--candidate", out, "--data", labels_root, "--dates", holdout_dates,
                    "--metrics", str(params.get("metrics") or DEFAULTS["metrics"]), "--min-gain", str(min_gain),
                    "--min-score", str(profiles.get("min_score", 0.0)), "--count", str(profiles.get("count", "score")),
                    *tax, *(["--keep", str(keep)] if keep else []), "--json"]
    submit = common.spark_submit_options(jc)
    if processes and "--use-gpu" in extra:  # TorchDistributor: one whole GPU per rank's task
        submit["spark_conf"]["spark.task.resource.gpu.amount"] = "1"
    return {
        "end": end.isoformat(),
        "train_dates": train_dates,
        "holdout_dates": holdout_dates,
        "labels_root": labels_root,
        "marker": common.success_marker(labels_root, end.isoformat()),
        "link": link,
        "out": out,
        "train_args": train_args,
        "train_on_spark": processes > 0,
        "promote_args": promote_args,
        **submit,
    }


def trainer(settings: Mapping[str, Any]) -> list[str]:
    """The ``choose_trainer`` branch: no task where the link already points at this week's bundle (a
    rerun after the promotion: nothing to train, and retraining into the production bundle's folder
    would change it under the nightly job), else ``train_on_spark`` or ``train``."""
    if already_current(settings["link"], settings["out"]):
        common.log.info("%s already points at %s: nothing to retrain", settings["link"], settings["out"])
        return []
    return ["train_on_spark" if settings["train_on_spark"] else "train"]


def already_current(link: str, out: str) -> bool:
    """Whether the link already points at ``out`` (a rerun after the promotion: nothing to train, and
    retraining into the production bundle's own folder would change it under the nightly job)."""
    p = Path(link)
    return p.is_symlink() and p.resolve() == Path(out).resolve()


def promote(argv: list[str]) -> dict[str, Any]:
    """Run ``vtag promote``; a candidate the metrics reject raises ``AirflowFailException`` (no retry: the
    model is worse, not the machine) listing the metrics that fell short."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        proc = common.run_vtag(argv)
    except common.VtagError as exc:
        record = common.last_json(exc.stdout)
        if exc.returncode == 3 and isinstance(record, dict):
            lines = "\n".join(f"  - {f}" for f in record.get("failed", []))
            raise AirflowFailException(f"the retrained bundle {record.get('candidate')} was not promoted; the "
                                       f"current one stays:\n{lines}") from None
        raise
    return common.last_json(proc.stdout) or {}
