"""``vtag_retag``: bring months of tag partitions to a new taxonomy version (triggered by hand).

resolve -> plan -> months -> retag_month (mapped: one per calendar month of the range) -> verify

- ``resolve``: the Params (from/to taxonomy, bundle trained on the new one, start/end day, dry run)
  checked and turned into argument lists;
- ``plan``: ``vtag retag plan --from F --to T --start D1 --end D2 --json``: per day, rows remapped
  without the model and rows re-inferred, with the estimated cost; refuses a bad range or taxonomy
  (the run stops there);
- ``retag_month``: ``SparkSubmitOperator`` running ``vtag retag run ... --start M1 --end M2 --bundle B``
  through ``spark_apps/vtag_app.py``, one mapped task instance per month (at most two at a time;
  a retried month skips the days already at the target version);
- ``verify``: ``vtag quality --start D1 --end D2 --expect-taxonomy T``: every row of the range at the
  target version, no row lost or duplicated against the tag runs, no duplicate ``video_id``.
  Skipped for a dry run.

Trigger: ``airflow dags trigger vtag_retag --conf '{"from_taxonomy": "conf/taxonomy/demo-v1.yaml",
"to_taxonomy": "conf/taxonomy/demo-v2.yaml", "bundle": "/opt/vtag/bundles/v2", "start": "2024-01-01",
"end": "2024-03-31"}'`` (paths relative to VTAG_HOME or absolute).
"""

from __future__ import annotations

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Param, Variable, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

try:
    import _common as common
    import _retag as retag
except ImportError:
    from airflow_dags import _common as common
    from airflow_dags import _retag as retag

PARAMS = {
    "from_taxonomy": Param("conf/taxonomy/demo-v1.yaml", type="string", description="the taxonomy the rows are at now"),
    "to_taxonomy": Param("conf/taxonomy/demo-v2.yaml", type="string", description="the taxonomy to bring them to"),
    "bundle": Param("", type="string", description="model bundle trained on to_taxonomy (re-inferred rows)"),
    "start": Param("", type="string", description="first dump day, YYYY-MM-DD"),
    "end": Param("", type="string", description="last dump day, YYYY-MM-DD (inclusive)"),
    "warehouse": Param(None, type=["null", "string"], description="default: Variable vtag_warehouse, else the job conf"),
    "dump_root": Param(None, type=["null", "string"],
                       description="dumps for re-inference; default: Variable vtag_dump_root, else the job conf"),
    "conf": Param([], type="array", items={"type": "string"}, description="k=v overrides for the jobs (spark.* to Spark)"),
    "job_conf": Param(None, type=["null", "string"],
                      description=f"job conf YAML; default: Variable vtag_job_conf, else {common.DEFAULT_JOB_CONF}"),
    "dry_run": Param(False, type="boolean", description="plan and run with --dry-run: nothing is written"),
}

with DAG(
    dag_id="vtag_retag",
    description="Re-tag a date range to a new taxonomy version: plan, one Spark job per month, verify",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    **common.dag_kwargs(__doc__),
) as dag:

    @task(multiple_outputs=True)
    def resolve() -> dict:
        try:
            settings = retag.resolve_retag(get_current_context()["params"], lambda n: Variable.get(n, default=None))
        except ValueError as exc:
            raise AirflowFailException(f"vtag_retag: {exc}") from None
        common.log.info("vtag_retag settings: %s", settings)
        return settings

    @task(**common.spark_pool_kwargs())
    def plan(argv: list[str]):
        """``vtag retag plan --json``; a refusal (exit != 0) fails the run without retry."""
        try:
            proc = common.run_vtag(argv)
        except common.VtagError as exc:
            raise AirflowFailException(str(exc)) from None
        return common.last_json(proc.stdout)

    @task
    def months(month_args: list[list[str]]) -> list[list[str]]:
        """The mapped tasks' argument lists, one per calendar month of the range."""
        return month_args

    @task(outlets=[common.video_tags_asset(), common.video_tags_day_alias()], **common.spark_pool_kwargs())
    def verify(argv: list[str], dry_run: bool, start: str, end: str) -> dict:
        """``vtag quality`` over the range at the target taxonomy; a pass emits the Asset events of the
        table and of every re-tagged day."""
        if dry_run:
            raise AirflowSkipException("dry run: nothing was written")
        result = common.quality_gate(argv)
        ctx = get_current_context()
        common.emit_days(ctx["outlet_events"], common.days_between(start, end),
                         {"job": "retag", "run_id": ctx.get("run_id"), "ok": result["ok"]})
        return result

    settings = resolve()
    planned = plan(settings["plan_args"])
    windows = months(settings["month_args"])
    planned >> windows

    retag_month = SparkSubmitOperator.partial(
        task_id="retag_month",
        name="vtag-retag",
        conf=settings["spark_conf"],
        packages=settings["packages"],
        jars=settings["jars"],
        max_active_tis_per_dagrun=2,
        map_index_template="{{ task.application_args[task.application_args.index('--start') + 1][:7] }}",
        **common.spark_task_kwargs(),
    ).expand(application_args=windows)

    retag_month >> verify(settings["verify_args"], settings["dry_run"], settings["start"], settings["end"])
