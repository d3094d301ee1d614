"""``vtag_retrain``: retrain the model on the latest labeled days every week, and promote it over the
nightly job's bundle only where it is not worse on days it never saw.

A bundle left alone falls behind: on the Bilibili file's last four weeks a bundle never retrained
scores 0.639 leaf accuracy, this loop (two held-out days) 0.692 (``bench/results/retrain_replay.md``).
The timetable is weekly (``CronDataIntervalTimetable``, Monday 06:00 UTC); the run whose data interval
ends on day E uses the labeled days up to E − 1 (Param ``end`` overrides). ``catchup=False``: a
missed week is not worth training for once a later one exists.

resolve -> wait_for_labels -> choose_trainer -> train | train_on_spark -> promote

- ``resolve``: the run's settings (Params > Variables > job conf; ``_retrain.resolve_retrain``);
- ``wait_for_labels``: sensor (reschedule mode) for ``<labels_root>/dt=<end>/_SUCCESS``;
- ``choose_trainer``: neither (and so no ``promote``) when the link already points at this week's
  bundle (a rerun after the promotion); ``train_on_spark`` when ``train_processes`` > 0, else ``train``;
- ``train``: ``vtag train --dates <train days> --drop-checkpoint`` into ``<bundle_root>/<link name>-<end>``
  on this worker (pool ``VTAG_TRAIN_POOL``); ``train_on_spark``: the same as a Spark application
  (``SparkSubmitOperator``, the nightly ``tag`` task's connection and job conf) with ``--processes N
  --cluster``: DDP over N Spark tasks (``TorchDistributor``; ``--use-gpu`` in ``train_args`` for one GPU each);
- ``promote``: ``vtag promote`` scores the current bundle and the new one on the held-out days and
  re-points the link (one rename) only when every metric gains at least ``min_gain``; a rejection
  fails the task without retry, listing the metrics, and the current bundle stays. ``vtag tag``
  resolves the link once at its start, so a nightly run in flight keeps its bundle.
  ``vtag promote --rollback --link <link>`` undoes a promotion. ``--keep <keep_bundles>`` (default 3)
  then deletes the older bundle folders the promotion log names, past the rollback chain.

docs/operations.md "Retraining" has the operator's view.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, Variable, get_current_context, task

try:  # the folder is on sys.path when Airflow parses it
    import _common as common
    import _retrain as retrain
except ImportError:  # imported as a package (airflow_dags.vtag_retrain)
    from airflow_dags import _common as common
    from airflow_dags import _retrain as retrain

PARAMS = {
    "end": Param(None, type=["null", "string"], format="date",
                 description="last labeled day YYYY-MM-DD; default: the day before the data interval's end"),
    "labels_root": Param(None, type=["null", "string"],
                         description="default: Variable vtag_labels_root, else the job conf's profiles.labels_root"),
    "bundle": Param(None, type=["null", "string"],
                    description="the bundle link the nightly job tags with; default: Variable vtag_bundle, else the job conf"),
    "bundle_root": Param(None, type=["null", "string"],
                         description="folder of the versioned bundles; default: Variable vtag_bundle_root, else the link's folder"),
    "train_config": Param(None, type=["null", "string"],
                          description="default: Variable vtag_train_config, else conf/model/text-context.yaml"),
    "taxonomy": Param(None, type=["null", "string"], description="default: Variable vtag_taxonomy, else the job conf"),
    "train_days": Param(None, type=["null", "integer"], minimum=0,
                        description="labeled days that train (0: every earlier day); default: Variable, else 56"),
    "holdout_days": Param(None, type=["null", "integer"], minimum=1,
                          description="latest labeled days held out; default: Variable vtag_holdout_days, else 2"),
    "min_gain": Param(None, type=["null", "number"],
                      description="least gain of each metric over the current bundle; default: Variable, else 0"),
    "metrics": Param(None, type=["null", "string"], description="metrics that must not fall (default leaf_acc,hf1)"),
    "train_processes": Param(None, type=["null", "integer"], minimum=0,
                             description="N > 0: train on the Spark cluster (spark-submit, TorchDistributor over N "
                                         "processes); default: Variable vtag_train_processes, else 0 (this worker)"),
    "keep_bundles": Param(None, type=["null", "integer"], minimum=0,
                          description="bundle folders kept back along the rollback chain, older ones deleted "
                                      "(0: none deleted); default: Variable vtag_keep_bundles, else 3"),
    "train_args": Param([], type="array", items={"type": "string"},
                        description="extra vtag train options, e.g. --max-minutes 600 --threads 16"),
    "job_conf": Param(None, type=["null", "string"],
                      description=f"job conf YAML; default: Variable vtag_job_conf, else {common.DEFAULT_JOB_CONF}"),
    "conf": Param([], type="array", items={"type": "string"}, description="k=v overrides of the job conf"),
}


with DAG(
    dag_id="vtag_retrain",
    description="Retrain on the latest labeled days weekly; promote the bundle only where it is not worse",
    schedule=CronDataIntervalTimetable("0 6 * * 1", timezone="UTC"),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    **common.dag_kwargs(__doc__),
) as dag:

    @task(multiple_outputs=True)
    def resolve() -> dict:
        """Resolve the run's settings once and log them."""
        ctx = get_current_context()
        settings = retrain.resolve_retrain(ctx["params"], ctx.get("data_interval_end"),
                                           lambda name: Variable.get(name, default=None))
        common.log.info("vtag_retrain settings: %s", settings)
        return settings

    @task.sensor(poke_interval=600, timeout=common.DUMP_WAIT.total_seconds(), mode="reschedule")
    def wait_for_labels(marker: str) -> bool:
        """True once the last labeled day's ``_SUCCESS`` marker exists."""
        return common.poke_marker(marker)

    @task.branch
    def choose_trainer(settings: dict) -> list[str]:
        """``train`` (on this worker), ``train_on_spark``, or neither (a rerun after the promotion)."""
        return retrain.trainer(settings)

    @task(retries=1, retry_delay=timedelta(minutes=10), execution_timeout=timedelta(hours=12),
          **retrain.train_pool_kwargs())
    def train(argv: list[str]) -> None:
        """``vtag train`` into a new versioned bundle folder, on this worker."""
        common.run_vtag(argv, timeout=12 * 3600)

    @task(trigger_rule="none_failed_min_one_success", retries=1, retry_delay=timedelta(minutes=5),
          execution_timeout=timedelta(hours=2))
    def promote(argv: list[str], link: str, out: str) -> dict:
        """``vtag promote``: compare on the held-out days, switch the link where the new bundle is not worse."""
        from airflow.sdk.exceptions import AirflowSkipException

        # its trigger rule runs it after either trainer, and also where choose_trainer chose neither
        # (resolve, upstream too, succeeded): the rerun after a promotion has nothing to compare
        if retrain.already_current(link, out):
            raise AirflowSkipException(f"{link} already points at {out}")
        record = retrain.promote(argv)
        common.log.info("promoted %s over %s: gains %s", record.get("candidate"), record.get("link"),
                        record.get("gains"))
        return record

    settings = resolve()
    waited = wait_for_labels(settings["marker"])
    chosen = choose_trainer(settings)
    on_spark = common.spark_submit_task("train_on_spark", "vtag-train", settings, settings["train_args"],
                                        retries=1, execution_timeout=timedelta(hours=12))
    promoted = promote(settings["promote_args"], settings["link"], settings["out"])
    waited >> chosen >> [train(settings["train_args"]), on_spark] >> promoted
