"""Settings and helpers shared by the vtag DAGs (``vtag_nightly``, ``vtag_retag``).

The DAGs run in Airflow's own virtual environment and call the vtag jobs by command line only:
``spark-submit`` of ``spark_apps/vtag_app.py`` for the Spark jobs that do the work (tag, retag), and
the project venv's ``vtag`` CLI for the small ones (quality gate, maintenance, retag plan). Nothing
here imports the project, torch or pyspark; this module reads only environment variables at parse
time (no Variables, no files, no database).

Deployment (parse time, from the environment of the DAG processor and the workers):

``VTAG_HOME``           the vtag checkout the jobs run from (default: the parent of this folder)
``VTAG_VENV``           the project's virtual environment (default: ``$VTAG_HOME/.venv``)
``VTAG_SPARK_SUBMIT``   the spark-submit to run (default: ``$VTAG_VENV/bin/spark-submit``)
``VTAG_SPARK_CONN_ID``  the Spark connection (default: ``spark_default``)
``VTAG_MAX_ACTIVE_RUNS``  ``vtag_nightly``'s max_active_runs (default 2)
``VTAG_START_DATE``     the first dump day ``vtag_nightly`` schedules (default 2024-01-01)
``VTAG_DUMP_WAIT_HOURS``  how long the sensor waits for a day's ``_SUCCESS`` (default 12)
``VTAG_TAG_RETRIES``    retries of the Spark tasks (default 3; exponential backoff from 5 minutes)
``VTAG_SPARK_POOL``     the Airflow pool of every task that runs a Spark job (default ``vtag_spark``;
                        create it: ``airflow pools set vtag_spark 2 "vtag Spark jobs"``)
``VTAG_SPARK_POOL_SLOTS``  slots one Spark task takes in that pool (default 1)
``VTAG_ON_FAILURE``     failure notifiers, comma-separated ``module:attribute`` (a callable taking the
                        task context, or an Airflow notifier instance) importable from the DAGs folder;
                        called on every failed task beside the built-in one-line log (:func:`log_failure`)
``VTAG_VIDEO_TAGS_URI`` the URI of the ``video_tags`` Asset (default ``file://$VTAG_HOME/warehouse/video_tags``)

Run time (Params of a run, else Airflow Variables, else the job conf): see ``resolve_nightly``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

DAGS_DIR = Path(__file__).resolve().parent
REPO = Path(os.environ.get("VTAG_HOME") or DAGS_DIR.parent)
VENV = Path(os.environ.get("VTAG_VENV") or REPO / ".venv")
PYTHON_BIN = str(VENV / "bin" / "python")
VTAG_BIN = str(VENV / "bin" / "vtag")
SPARK_SUBMIT = os.environ.get("VTAG_SPARK_SUBMIT") or str(VENV / "bin" / "spark-submit")
SPARK_APP = str(DAGS_DIR / "spark_apps" / "vtag_app.py")
SPARK_CONN_ID = os.environ.get("VTAG_SPARK_CONN_ID", "spark_default")
MAX_ACTIVE_RUNS = int(os.environ.get("VTAG_MAX_ACTIVE_RUNS", "2"))
START_DATE = datetime.fromisoformat(os.environ.get("VTAG_START_DATE", "2024-01-01")).replace(tzinfo=timezone.utc)
DUMP_WAIT = timedelta(hours=float(os.environ.get("VTAG_DUMP_WAIT_HOURS", "12")))
SPARK_RETRIES = int(os.environ.get("VTAG_TAG_RETRIES", "3"))
SPARK_POOL = os.environ.get("VTAG_SPARK_POOL") or "vtag_spark"
SPARK_POOL_SLOTS = int(os.environ.get("VTAG_SPARK_POOL_SLOTS", "1"))
ON_FAILURE = os.environ.get("VTAG_ON_FAILURE", "")
VIDEO_TAGS_URI = (os.environ.get("VTAG_VIDEO_TAGS_URI") or f"file://{REPO / 'warehouse' / 'video_tags'}").rstrip("/")
#: the Asset of the whole table (one event per published day) and the alias whose events name each day
VIDEO_TAGS_ASSET_NAME = "vtag_video_tags"
VIDEO_TAGS_DAY_ALIAS = "vtag_video_tags_day"
DEFAULT_JOB_CONF = "conf/jobs/local.yaml"

#: Variables read at run time (name -> what it is); a run's Param of the same name (less ``vtag_``) wins.
VARIABLES = {
    "vtag_job_conf": f"job conf YAML, relative to VTAG_HOME or absolute (default {DEFAULT_JOB_CONF})",
    "vtag_dump_root": "dump root holding dt=YYYY-MM-DD/ (default: the job conf's dump_root)",
    "vtag_warehouse": "Delta warehouse root (default: the job conf's warehouse)",
    "vtag_bundle": "model bundle directory (default: the job conf's bundle)",
    "vtag_taxonomy": "the job's taxonomy file (default: the job conf's taxonomy)",
    "vtag_max_quarantine_rate": "quality gate: highest rows quarantined / rows read (default 0.05)",
    "vtag_max_drift": "quality gate: highest level-1 Jensen-Shannon divergence from the day before (default 0.1)",
    "vtag_maintenance_weekday": "weekday of the dump date whose run runs OPTIMIZE, 0=Monday..6=Sunday (default 6)",
    "vtag_cli_conf": "JSON list of k=v overrides for the jobs run through the vtag CLI on the worker "
    '(quality gate); default ["spark.submit.deployMode=client"]',
}
DEFAULTS: dict[str, Any] = {
    "max_quarantine_rate": 0.05,
    "max_drift": 0.1,
    "maintenance_weekday": 6,
    "cli_conf": ["spark.submit.deployMode=client"],
}

#: The environment of every job process: the project's interpreter for the driver and the Python
#: workers, and nothing of Airflow's virtual environment.
JOB_ENV = {
    "PYSPARK_PYTHON": PYTHON_BIN,
    "PYSPARK_DRIVER_PYTHON": PYTHON_BIN,
    "VTAG_HOME": str(REPO),
    "PYTHONPATH": "",
}


def dag_kwargs(doc_md: str | None) -> dict[str, Any]:
    """The ``DAG(...)`` arguments every vtag DAG shares: start date, owner, no default retry, the failure
    callbacks on tasks and runs, the ``vtag`` tag and the DAG file's docstring as its doc."""
    return {
        "start_date": START_DATE,
        "default_args": {"owner": "vtag", "retries": 0, "on_failure_callback": failure_callbacks()},
        "on_failure_callback": failure_callbacks(),
        "tags": ["vtag"],
        "doc_md": doc_md,
    }


def spark_pool_kwargs() -> dict[str, Any]:
    """``pool``/``pool_slots`` of every task that runs a Spark job (spark-submit or a Spark CLI)."""
    return {"pool": SPARK_POOL, "pool_slots": SPARK_POOL_SLOTS}


def spark_task_kwargs() -> dict[str, Any]:
    """Keyword arguments shared by the ``SparkSubmitOperator`` tasks (tag, retag month)."""
    return {
        **spark_pool_kwargs(),
        "conn_id": SPARK_CONN_ID,
        "spark_binary": SPARK_SUBMIT,
        "application": SPARK_APP,
        "env_vars": dict(JOB_ENV),
        "retries": SPARK_RETRIES,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(hours=1),
        "execution_timeout": timedelta(hours=8),
    }


def spark_submit_task(task_id: str, name: str, settings: Any, application_args: Any, **overrides: Any):
    """A ``SparkSubmitOperator`` of ``spark_apps/vtag_app.py`` (the nightly ``tag``, the retrain's
    ``train_on_spark``): ``settings`` is the resolve task's output (its ``spark_conf``, ``packages`` and
    ``jars``), ``overrides`` replace :func:`spark_task_kwargs`' values."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    return SparkSubmitOperator(
        task_id=task_id,
        name=name,
        application_args=application_args,
        conf=settings["spark_conf"],
        packages=settings["packages"],
        jars=settings["jars"],
        **{**spark_task_kwargs(), **overrides},
    )


# ------------------------------------------------------------------------------------ resolving
def _is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file:")


def abspath(path: str | None) -> str | None:
    """A local path made absolute against ``VTAG_HOME`` (the jobs' working directory); URIs unchanged."""
    if path is None or str(path).strip() == "":
        return None
    path = str(path).strip()
    if _is_uri(path):
        return path
    p = Path(path.removeprefix("file://").removeprefix("file:")).expanduser()
    return str(p if p.is_absolute() else (REPO / p).resolve())


def _vtag(module: str) -> Any:
    """A light module of vtag's own code (``vtag.jobs.config``, ``vtag.jobs.spark.jars``: PyYAML and the
    standard library only), imported when a task resolves its settings, never at DAG parse time. When
    Airflow's environment has no vtag installed, the checkout ``VTAG_HOME`` is put on ``sys.path`` (its
    ``vtag/`` links to its code)."""
    import importlib
    import sys

    try:
        return importlib.import_module(module)
    except ImportError:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        return importlib.import_module(module)


def read_job_conf(path: str, overrides: list[str] | None = None) -> Any:
    """The job conf with ``overrides`` (``k=v``), read by the jobs' own code
    (:func:`vtag.jobs.config.load_job_conf`: the same keys, checks and merge as ``vtag --job-conf --conf``)."""
    return _vtag("vtag.jobs.config").load_job_conf(path, overrides or [])


def _pick(params: Mapping[str, Any], variable: Callable[[str], Any], name: str, fallback: Any = None) -> Any:
    """A run's Param ``name``, else Variable ``vtag_<name>``, else ``fallback``."""
    value = params.get(name)
    if value is not None and value != "":
        return value
    value = variable(f"vtag_{name}")
    if value is not None and value != "":
        return value
    return fallback


def _overrides(values: Any, what: str) -> list[str]:
    if values is None or values == "":
        return []
    if isinstance(values, str):
        values = json.loads(values) if values.strip().startswith("[") else [values]
    out = [str(v) for v in values]
    bad = [v for v in out if "=" not in v]
    if bad:
        raise ValueError(f"{what} takes k=v strings, got {bad}")
    return out


def dump_date(params: Mapping[str, Any], data_interval_start: datetime | None) -> str:
    """The dump day of a run: Param ``date`` when given, else the UTC date of the data interval start."""
    if params.get("date"):
        return date.fromisoformat(str(params["date"])).isoformat()
    if data_interval_start is None:
        raise ValueError(
            "this run has no data interval (a manual run without a logical date): pass the dump day as "
            'the Param "date", e.g. airflow dags trigger vtag_nightly --conf \'{"date": "2024-03-01"}\''
        )
    return data_interval_start.astimezone(timezone.utc).date().isoformat()


def spark_submit_options(job_conf: Any) -> dict[str, Any]:
    """``conf``/``packages``/``jars`` for spark-submit from a job conf (overrides applied): what must be
    known at JVM start. Delta's jars are chosen as the CLI's session chooses them
    (:func:`vtag.jobs.spark.jars.delta_jars`, for the project's venv ``VTAG_VENV``): ``delta_jars_dir``,
    else the folder ``make venv`` filled, else Maven (:func:`vtag.jobs.spark.jars.coordinate`)."""
    jars_mod = _vtag("vtag.jobs.spark.jars")
    spark_conf = {str(k): str(v) for k, v in (job_conf.get("spark") or {}).items()}
    spark_conf["spark.pyspark.python"] = PYTHON_BIN
    spark_conf["spark.pyspark.driver.python"] = PYTHON_BIN
    if job_conf.get("delta_jars_dir"):
        job_conf["delta_jars_dir"] = abspath(str(job_conf["delta_jars_dir"]))
    found = jars_mod.delta_jars(job_conf, prefix=VENV)
    jars = ",".join(found) if found else None
    packages = None if jars else jars_mod.coordinate(job_conf, prefix=VENV)
    return {"spark_conf": spark_conf, "packages": packages, "jars": jars}


def resolve_nightly(
    params: Mapping[str, Any], data_interval_start: datetime | None, variable: Callable[[str], Any]
) -> dict[str, Any]:
    """Everything a ``vtag_nightly`` run needs, resolved once: Params > Variables > job conf.

    Returns plain JSON values: the dump date, absolute paths, thresholds, whether maintenance is due,
    the ``spark-submit`` options and the argument lists of the tag job and of the quality gate.
    """
    dt = dump_date(params, data_interval_start)
    job_conf_path = abspath(_pick(params, variable, "job_conf", DEFAULT_JOB_CONF))
    overrides = _overrides(params.get("conf"), "Param conf")
    jc = read_job_conf(job_conf_path, overrides)
    dump_root = abspath(_pick(params, variable, "dump_root", jc.get("dump_root")))
    warehouse = abspath(_pick(params, variable, "warehouse", jc.get("warehouse")))
    bundle = abspath(_pick(params, variable, "bundle", jc.get("bundle")))
    taxonomy = abspath(_pick(params, variable, "taxonomy", jc.get("taxonomy")))
    for name, value in (("dump_root", dump_root), ("warehouse", warehouse), ("bundle", bundle)):
        if not value:
            raise ValueError(f"no {name}: set the Param {name}, the Variable vtag_{name} or {name} in {job_conf_path}")
    rate = float(_pick(params, variable, "max_quarantine_rate", DEFAULTS["max_quarantine_rate"]))
    drift = float(_pick(params, variable, "max_drift", DEFAULTS["max_drift"]))
    weekday = int(_pick(params, variable, "maintenance_weekday", DEFAULTS["maintenance_weekday"]))
    mode = str(params.get("maintenance") or "auto")
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"Param maintenance must be auto, always or never, got {mode!r}")
    due = mode == "always" or (mode == "auto" and date.fromisoformat(dt).weekday() == weekday)
    cli_conf = _overrides(variable("vtag_cli_conf") or DEFAULTS["cli_conf"], "Variable vtag_cli_conf")

    tag_args = ["tag", "--date", dt, "--job-conf", job_conf_path, "--dump-root", dump_root,
                "--warehouse", warehouse, "--bundle", bundle]
    if taxonomy:
        tag_args += ["--taxonomy", taxonomy]
    for kv in overrides:
        tag_args += ["--conf", kv]
    quality_args = ["quality", "--date", dt, "--job-conf", job_conf_path, "--warehouse", warehouse,
                    "--max-quarantine-rate", str(rate), "--max-drift", str(drift), "--json"]
    for kv in overrides + cli_conf:
        quality_args += ["--conf", kv]
    week = (date.fromisoformat(dt) - timedelta(days=6)).isoformat()
    maintain_args = ["maintain", "--table", "video_tags", "--optimize", "--where", f"dt >= '{week}' AND dt <= '{dt}'",
                     "--job-conf", job_conf_path, "--warehouse", warehouse]
    for kv in overrides + cli_conf:
        maintain_args += ["--conf", kv]
    return {
        "date": dt,
        "job_conf": job_conf_path,
        "dump_root": dump_root,
        "marker": success_marker(dump_root, dt),
        "warehouse": warehouse,
        "bundle": bundle,
        "taxonomy": taxonomy,
        "max_quarantine_rate": rate,
        "max_drift": drift,
        "maintenance_due": due,
        "tag_args": tag_args,
        "quality_args": quality_args,
        "maintain_args": maintain_args,
        **spark_submit_options(jc),
    }


def success_marker(dump_root: str, dt: str) -> str:
    return f"{dump_root.rstrip('/')}/dt={dt}/_SUCCESS"


def marker_exists(marker: str, conn_id: str | None = None) -> bool:
    """Whether a day's ``_SUCCESS`` exists: a local path, or any URI ObjectStoragePath can read."""
    if not _is_uri(marker):
        return Path(marker.removeprefix("file://").removeprefix("file:")).is_file()
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(marker, conn_id=conn_id).exists()


def poke_marker(marker: str) -> bool:
    """A sensor's poke: whether ``marker`` exists, logged either way."""
    found = marker_exists(marker)
    log.info("%s %s", marker, "found" if found else "not there yet")
    return found


# ------------------------------------------------------------------------------------ the vtag CLI
class VtagError(RuntimeError):
    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str):
        self.argv, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr
        tail = "\n".join((stderr or stdout).strip().splitlines()[-15:])
        super().__init__(f"`vtag {' '.join(argv)}` exited {returncode}:\n{tail}")


def run_vtag(argv: list[str], *, timeout: float | None = 6 * 3600) -> subprocess.CompletedProcess:
    """Run ``$VTAG_VENV/bin/vtag argv`` from ``VTAG_HOME``; its output goes to the task log.

    Raises :class:`VtagError` on a non-zero exit (with the last lines of stderr in the message).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update({k: v for k, v in JOB_ENV.items() if v})
    cmd = [VTAG_BIN, *argv]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout)
    for line in (proc.stdout or "").splitlines():
        log.info("%s", line)
    for line in (proc.stderr or "").splitlines():
        log.info("[stderr] %s", line)
    if proc.returncode != 0:
        raise VtagError(argv, proc.returncode, proc.stdout, proc.stderr)
    return proc


def last_json(text: str) -> Any:
    """The last line of ``text`` that parses as a JSON object or list (the CLIs' ``--json`` output)."""
    for line in reversed((text or "").strip().splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                return json.loads(line)
            except ValueError:
                continue
    try:
        return json.loads(text)
    except ValueError:
        return None


def quality_gate(argv: list[str]) -> dict[str, Any]:
    """Run ``vtag quality`` and return its report; a failed check raises ``AirflowFailException``
    (no retry: the data is wrong, not the machine) whose message lists every failed check."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        proc = run_vtag(argv)
    except VtagError as exc:
        report = last_json(exc.stdout)
        if exc.returncode == 1 and isinstance(report, dict) and report.get("failures"):
            lines = "\n".join(f"  - {f}" for f in report["failures"])
            raise AirflowFailException(f"vtag quality gate failed ({len(report['failures'])} check(s)):\n{lines}") from None
        raise
    report = last_json(proc.stdout) or {}
    return {
        "ok": bool(report.get("ok")),
        "checks": {
            f"{d['dt']} {c['name']}": {"ok": c["ok"], "value": c.get("value")}
            for d in report.get("days", [])
            for c in d["checks"]
        },
    }


# ------------------------------------------------------------------------------------ failures
def log_failure(context: Mapping[str, Any]) -> None:
    """The built-in failure callback: one log line naming the DAG, task, run, dump day and error."""
    ti = context.get("task_instance") or context.get("ti")
    params = context.get("params") or {}
    exc = context.get("exception")
    first = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else type(exc).__name__
    log.error("vtag: FAILED dag=%s task=%s run=%s date=%s try=%s: %s",
              getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?"), context.get("run_id", "?"),
              params.get("date") or context.get("ds") or "?", getattr(ti, "try_number", "?"), first)


def load_notifiers(spec: str) -> list[Any]:
    """The notifiers of ``VTAG_ON_FAILURE``: ``module:attribute`` entries, comma-separated.

    Each attribute is a callable taking the task context, or a notifier instance (e.g. an
    ``airflow.providers.smtp.notifications.smtp.SmtpNotifier``). A wrong entry fails the DAG's
    parse with a clear import error: alerts that silently do nothing are worse.
    """
    import importlib

    out = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        module, sep, attr = entry.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"VTAG_ON_FAILURE entry {entry!r}: expected module:attribute")
        target = getattr(importlib.import_module(module), attr)
        if not callable(target):
            raise ValueError(f"VTAG_ON_FAILURE entry {entry!r} is not callable")
        out.append(target)
    return out


def failure_callbacks(extra: list[Any] | None = None) -> list[Any]:
    """``on_failure_callback`` of every vtag task and DAG: :func:`log_failure`, then the notifiers of
    ``VTAG_ON_FAILURE``, then ``extra``."""
    return [log_failure, *load_notifiers(ON_FAILURE), *(extra or [])]


# ------------------------------------------------------------------------------------ assets
def video_tags_asset():
    """The ``video_tags`` table as an Airflow Asset: an event each time days are published."""
    from airflow.sdk import Asset

    return Asset(name=VIDEO_TAGS_ASSET_NAME, uri=VIDEO_TAGS_URI, group="vtag")


def video_tags_day_alias():
    """The alias whose events are per-day Assets ``vtag_video_tags/dt=YYYY-MM-DD``."""
    from airflow.sdk import AssetAlias

    return AssetAlias(name=VIDEO_TAGS_DAY_ALIAS, group="vtag")


def day_asset(dt: str):
    """The Asset of one day of ``video_tags`` (what a downstream DAG may schedule on)."""
    from airflow.sdk import Asset

    return Asset(name=f"{VIDEO_TAGS_ASSET_NAME}/dt={dt}", uri=f"{VIDEO_TAGS_URI}/dt={dt}", group="vtag")


def emit_days(outlet_events: Any, days: list[str], extra: Mapping[str, Any]) -> None:
    """Attach the published ``days`` to the task's Asset events: ``extra`` (plus ``dates``) on the table's
    event, and one event per day's Asset through the alias (``extra`` plus ``dt``)."""
    outlet_events[video_tags_asset()].extra = {**dict(extra), "dates": list(days)}
    alias = outlet_events[video_tags_day_alias()]
    for dt in days:
        alias.add(day_asset(dt), extra={**dict(extra), "dt": dt})


def days_between(start: str, end: str) -> list[str]:
    d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    return [(d0 + timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]

