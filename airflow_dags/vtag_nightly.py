"""``vtag_nightly``: tag each day's UGC dump into the Delta tag tables, gate it, and keep the table tidy.

One run per dump day. The timetable is a data-interval one (``CronDataIntervalTimetable``, daily at
00:00 UTC): the run for dump day D covers [D 00:00, D+1 00:00) UTC, starts after D+1 00:00, and
tags ``dt=D`` — the dump date is ``data_interval_start`` (or the Param ``date``), never the time the
run happens to start. ``catchup=True``: ``airflow backfill create --dag-id vtag_nightly --from-date
D1 --to-date D2`` tags the dump days D1..D2.

resolve -> wait_for_dump -> tag -> quality_gate -> maintenance_due -> optimize

- ``resolve``: the run's settings (Params > Variables > job conf), once, as XComs;
- ``wait_for_dump``: sensor (reschedule mode) for ``<dump_root>/dt=D/_SUCCESS``;
- ``tag``: ``SparkSubmitOperator`` running ``vtag tag`` through ``spark_apps/vtag_app.py``, retried
  with exponential backoff (a re-run replaces the day atomically);
- ``quality_gate``: ``vtag quality`` (the invariant on the tables, quarantine rate, level-1 drift
  from the previous day); fails without retry, listing the failed checks; when it passes it emits
  the ``video_tags`` Asset event and the day's Asset ``vtag_video_tags/dt=D`` (through the alias
  ``vtag_video_tags_day``), so downstream DAGs can be scheduled on tagged, gated days;
- ``maintenance_due`` / ``optimize``: ``vtag maintain --table video_tags --optimize`` on one weekday
  of the dump date (Variable ``vtag_maintenance_weekday``, Sunday by default) or when the Param
  ``maintenance`` says ``always``.

The Spark tasks (tag, quality_gate, optimize) run in the pool ``VTAG_SPARK_POOL`` (default
``vtag_spark``); every task's failure goes to ``common.failure_callbacks()`` (a one-line log, then
the notifiers named by ``VTAG_ON_FAILURE``).

Nothing heavy is imported here: see ``_common``. docs/operations.md has the operator's view.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, Variable, get_current_context, task

try:  # the folder is on sys.path when Airflow parses it
    import _common as common
except ImportError:  # imported as a package (airflow_dags.vtag_nightly)
    from airflow_dags import _common as common

PARAMS = {
    "date": Param(None, type=["null", "string"], format="date",
                  description="dump day YYYY-MM-DD; default: the run's data interval start"),
    "dump_root": Param(None, type=["null", "string"], description="default: Variable vtag_dump_root, else the job conf"),
    "warehouse": Param(None, type=["null", "string"], description="default: Variable vtag_warehouse, else the job conf"),
    "bundle": Param(None, type=["null", "string"], description="default: Variable vtag_bundle, else the job conf"),
    "taxonomy": Param(None, type=["null", "string"], description="default: Variable vtag_taxonomy, else the job conf"),
    "job_conf": Param(None, type=["null", "string"],
                      description=f"job conf YAML; default: Variable vtag_job_conf, else {common.DEFAULT_JOB_CONF}"),
    "conf": Param([], type="array", items={"type": "string"},
                  description="k=v overrides for the jobs (spark.* go to Spark), e.g. tag_partitions=64"),
    "max_quarantine_rate": Param(None, type=["null", "number"], minimum=0,
                                 description="default: Variable vtag_max_quarantine_rate, else 0.05"),
    "max_drift": Param(None, type=["null", "number"], minimum=0, maximum=1,
                       description="level-1 Jensen-Shannon divergence; default: Variable vtag_max_drift, else 0.1"),
    "maintenance": Param("auto", enum=["auto", "always", "never"],
                         description="OPTIMIZE video_tags: auto = on the maintenance weekday of the dump date"),
}


def _variable(name: str):
    return Variable.get(name, default=None)


with DAG(
    dag_id="vtag_nightly",
    description="Tag the day's UGC dump into video_tags (Spark), gate the result, OPTIMIZE weekly",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    catchup=True,
    max_active_runs=common.MAX_ACTIVE_RUNS,
    params=PARAMS,
    **common.dag_kwargs(__doc__),
) as dag:

    @task(multiple_outputs=True)
    def resolve() -> dict:
        """Resolve the run's settings once (Params > Variables > job conf) and log them."""
        ctx = get_current_context()
        settings = common.resolve_nightly(ctx["params"], ctx.get("data_interval_start"), _variable)
        common.log.info("vtag_nightly settings: %s", settings)
        return settings

    @task.sensor(poke_interval=300, timeout=common.DUMP_WAIT.total_seconds(), mode="reschedule")
    def wait_for_dump(marker: str) -> bool:
        """True once the day's ``_SUCCESS`` marker exists (the dump is complete)."""
        return common.poke_marker(marker)

    settings = resolve()
    waited = wait_for_dump(settings["marker"])

    tag = common.spark_submit_task("tag", "vtag-tag", settings, settings["tag_args"])

    @task(retries=1, retry_delay=timedelta(minutes=2), outlets=[common.video_tags_asset(), common.video_tags_day_alias()],
          **common.spark_pool_kwargs())
    def quality_gate(argv: list[str], dt: str) -> dict:
        """``vtag quality`` on the day; a failed check fails the run with the checks' messages. A pass
        emits the Asset events of the table and of the day (``extra``: the day and the checks)."""
        result = common.quality_gate(argv)
        ctx = get_current_context()
        common.emit_days(ctx["outlet_events"], [dt], {"job": "tag", "run_id": ctx.get("run_id"), "ok": result["ok"]})
        return result

    @task.short_circuit
    def maintenance_due(due: bool) -> bool:
        return bool(due)

    @task(retries=2, retry_delay=timedelta(minutes=10), retry_exponential_backoff=2.0, **common.spark_pool_kwargs())
    def optimize(argv: list[str]) -> None:
        """``vtag maintain --table video_tags --optimize`` (compaction of the small files of the week)."""
        common.run_vtag(argv)

    gate = quality_gate(settings["quality_args"], settings["date"])
    due = maintenance_due(settings["maintenance_due"])
    waited >> tag >> gate >> due >> optimize(settings["maintain_args"])
