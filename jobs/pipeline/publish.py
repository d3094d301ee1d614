"""Write, audit, publish: one day's rows go to ``video_tags`` and ``video_tags_quarantine`` as one unit.

Both ``vtag tag`` and ``vtag retag run`` publish a day through :func:`run_day`. The protocol, per run:

1. **begin** -- the run's heartbeat file is written (``<warehouse>/_vtag_runs/<run_id>/heartbeat``,
   refreshed every ``publish.heartbeat_s`` by a daemon thread), runs of the same day that were left
   ``started`` by a process that is gone are settled
   (:func:`vtag.jobs.pipeline.publish_recovery.recover_day`), and the run's ``tag_runs`` row is
   appended with status ``started``.
2. **write** -- the job computes the day's rows (lazily) and they are written once to staging Parquet
   under the run's directory (inference runs here, exactly once); everything after reads the staged
   files.
3. **audit** -- on the staged rows, before any table changes: rows read = rows tagged + rows
   quarantined (a file-level quarantine entry counts the rows its footer gives,
   :func:`vtag.jobs.pipeline.validate.quarantined_rows`), every ``video_id`` of ``video_tags`` once and not null,
   every row of the day's date, plus the job's own checks. A failed audit fails the run with
   nothing written.
4. **publish** -- under the day's lock (``_vtag_runs/_locks/dt=D.lock``, one publisher of a day at
   a time), the versions of both tables are recorded in the run's ``publish.json`` (its intent), then
   the tables are committed in the fixed order of :data:`ORDER` (quarantine first, ``video_tags``
   last), each a ``replaceWhere`` of the day, and the committed versions are read back and checked
   against the staged counts. On any failure (an exception, an interrupt) each table already committed
   is put back to its version before the run, **for that day only**
   (:func:`vtag.jobs.pipeline.publish_state.restore_day`: the day's rows as of that version written
   back with ``replaceWhere``). ``RESTORE TABLE ... TO VERSION AS OF``
   would also roll back the other days that concurrent runs committed in between, so it is not used.
   A run that finds that another run published its day after it began is refused (``superseded``):
   of two runs of one day at once, the first to publish wins and the other fails, writing nothing.
5. **finish** -- the ``tag_runs`` row is updated in place (one row per run) with its counts, timings,
   status and a message naming the committed versions; the staging directory is removed.

A run killed on the way (SIGKILL, a lost driver) is settled by the next run of its day or by ``vtag tag
--repair``: :mod:`vtag.jobs.pipeline.publish_recovery`. The tables' history and the ``tag_runs``
helpers both use are in :mod:`vtag.jobs.pipeline.publish_state`.

``VTAG_FAULT_INJECT`` (tests only): ``point=action[,point=action]`` with points ``after_stage`` (audit
passed, nothing locked), ``before_commit`` (intent written), ``after_commit:<table>`` and
``after_publish``, and actions ``raise``, ``kill`` (SIGKILL of the driver's own process),
``sleep:<seconds>`` or ``abandon`` (in-process stand-in for a kill: the run stops where it is, its
heartbeat file is removed and nothing is rolled back or recorded).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from vtag.jobs.pipeline.publish_guard import DayLock, Heartbeat, publish_settings, store_for
from vtag.jobs.pipeline.publish_recovery import settle_dead_runs
from vtag.jobs.pipeline.publish_state import (
    FAILED,
    ORDER,
    STARTED,
    SUCCEEDED,
    AuditError,
    Commit,
    Staged,
    commits_since,
    day_count,
    own_commit,
    restore_day,
    runs_of_day,
    table_version,
    update_run,
    verify_published,
)
from vtag.jobs.warehouse.tables import append_run, conform, ensure_table, replace_day, utcnow

FAULT_ENV = "VTAG_FAULT_INJECT"


class SupersededError(RuntimeError):
    """Another run published the day after this one began: this run publishes nothing."""


class AbandonRun(BaseException):  # noqa: N818 - a stand-in for SIGKILL, not an error
    """``VTAG_FAULT_INJECT=<point>=abandon``: the run stops as if killed (tests only)."""


# ----------------------------------------------------------------------------------- faults (tests)
def fault(point: str) -> None:
    """Act on ``VTAG_FAULT_INJECT`` at ``point`` (tests only; see the module docstring)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for item in spec.split(","):
        where, _, action = item.strip().partition("=")
        if where != point:
            continue
        if action == "raise":
            raise RuntimeError(f"injected fault at {point}")
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action.startswith("sleep:"):
            time.sleep(float(action.split(":", 1)[1]))
        if action == "abandon":
            raise AbandonRun(point)


@dataclass
class DayOutput:
    """What a job computed for its day (lazy frames, written once by :meth:`DayRun.stage`).

    ``frames``: table name -> rows to publish (any superset of the table's columns); ``rows_read``:
    the rows the day's input held (None: no invariant check); ``notes``: for ``tag_runs.message``.
    """

    frames: dict[str, DataFrame]
    rows_read: int | None = None
    notes: list[str] = field(default_factory=list)



class DayRun:
    """One run of a job on one day, through write, audit and publish (see the module docstring)."""

    def __init__(self, spark: SparkSession, conf: dict[str, Any], job: str, dt: str, run_id: str,
                 record: dict[str, Any]):
        date.fromisoformat(dt)
        self.spark, self.conf, self.job, self.dt, self.run_id = spark, conf, job, dt, run_id
        self.record = record
        self.settings = publish_settings(conf)
        self.store = store_for(spark, conf)
        self.heartbeat = Heartbeat(self.store, run_id, self.settings)
        self.begin_versions: dict[str, int] = {}
        self.committed: dict[str, int] = {}
        self.pre: dict[str, int] = {}
        self.staged: Staged | None = None
        self.notes: list[str] = []
        self._problems: list[str] = []
        self.t0 = time.time()

    @property
    def meta(self) -> dict[str, Any]:
        return {"job": self.job, "dt": self.dt, "run_id": self.run_id}

    def run_dir(self, *parts: str) -> str:
        return self.store.path(self.run_id, *parts)

    # -- 1. begin
    def begin(self) -> list[dict[str, Any]]:
        """Record the run as started; returns the day's ``tag_runs`` rows as read before that."""
        for name in ("tag_runs", *ORDER):
            ensure_table(self.spark, self.conf, name)
        runs = runs_of_day(self.spark, self.conf, self.dt)
        existing = [r for r in runs if r["run_id"] == self.run_id]
        if existing:
            raise ValueError(f"run id {self.run_id} is already recorded in tag_runs ({existing[0]['status']})")
        self.heartbeat.start()
        try:
            append_run(self.spark, self.conf, {**self.record, "status": STARTED})
        except BaseException:
            self.heartbeat.stop()
            self.store.remove(self.run_dir())
            raise
        return runs

    def settle(self, runs: list[dict[str, Any]] | None = None) -> None:
        """Settle the dead runs of the day and note the tables' versions this run starts from. ``runs``:
        the day's ``tag_runs`` rows :meth:`begin` read (a run that started since is alive); None reads them."""
        self.notes += [r.message for r in settle_dead_runs(self.spark, self.conf, self.dt, self.run_id, self.settings,
                                                           runs=runs)]
        self.begin_versions = {name: table_version(self.spark, self.conf, name) for name in ORDER}

    # -- 2. write
    def stage(self, output: DayOutput) -> Staged:
        from vtag.jobs.pipeline.validate import quarantined_rows

        dirs, frames, counts = {}, {}, {}
        for name in ORDER:
            if name not in output.frames:
                continue
            out = conform(output.frames[name], name)
            path = self.run_dir("staged", name)
            out.write.mode("overwrite").parquet(path)
            frames[name] = self.spark.read.schema(out.schema).parquet(path)
            dirs[name] = path
        tagged = quarantined = 0
        problems = []
        if "video_tags" in frames:
            r = frames["video_tags"].agg(
                F.count(F.lit(1)).alias("n"), F.countDistinct("video_id").alias("ids"),
                F.sum(F.col("video_id").isNull().cast("int")).alias("null_ids"),
                F.sum((F.col("dt") != F.lit(self.dt).cast("date")).cast("int")).alias("other_days"),
            ).first()
            tagged = counts["video_tags"] = int(r.n)
            if r.null_ids:
                problems.append(f"{r.null_ids} video_tags rows without a video_id")
            if int(r.ids) + int(r.null_ids or 0) != tagged:
                problems.append(f"{tagged - int(r.ids) - int(r.null_ids or 0)} video_tags rows repeat a video_id")
            if r.other_days:
                problems.append(f"{r.other_days} video_tags rows of another day than {self.dt}")
        if "video_tags_quarantine" in frames:
            q = frames["video_tags_quarantine"]
            r = q.agg(F.count(F.lit(1)).alias("n"), F.sum(quarantined_rows()).alias("w")).first()
            counts["video_tags_quarantine"] = int(r.n)
            quarantined = int(r.w or 0)
        if output.rows_read is not None and output.rows_read != tagged + quarantined:
            problems.append(f"rows read {output.rows_read} != rows tagged {tagged} + rows quarantined {quarantined}")
        self.staged = Staged(frames, dirs, counts, tagged, quarantined)
        self.record.update(rows_read=output.rows_read, rows_tagged=tagged, rows_quarantined=quarantined)
        self._problems = problems
        return self.staged

    # -- 3. audit
    def audit(self, extra: list[str] | None = None) -> None:
        problems = list(self._problems) + list(extra or [])
        if problems:
            raise AuditError(f"{self.dt}: the day's rows fail the audit, nothing was published: " + "; ".join(problems))

    # -- 4. publish
    def publish(self) -> None:
        staged = self.staged
        assert staged is not None, "stage() first"
        with DayLock(self.store, self.dt, self.run_id, self.settings):
            self.notes += [r.message for r in settle_dead_runs(self.spark, self.conf, self.dt, self.run_id,
                                                               self.settings, locked=True)]
            for name in staged.frames:
                last_op: dict[str, Commit] = {}
                for c in commits_since(self.spark, self.conf, name, self.begin_versions[name]):
                    if c.meta.get("dt") == self.dt and c.meta.get("run_id") not in (None, self.run_id):
                        last_op[c.meta["run_id"]] = c
                live = [c for c in last_op.values() if c.meta.get("op") in ("publish", "finish")]
                if live:
                    c = max(live, key=lambda c: c.version)
                    raise SupersededError(
                        f"{self.dt}: run {c.meta.get('run_id')} ({c.meta.get('job')}) published the day in {name} "
                        f"v{c.version} after this run began; this run publishes nothing (rerun the day to redo it)"
                    )
            self.pre = {name: table_version(self.spark, self.conf, name) for name in ORDER}
            # an empty day over an empty day is no change (and Delta would not commit it)
            tables = [n for n in ORDER if n in staged.frames and (
                staged.counts[n] or day_count(self.spark, self.conf, n, self.dt, self.pre[n]))]
            intent = {"run_id": self.run_id, "job": self.job, "dt": self.dt, "pre": self.pre,
                      "tables": tables, "staged": staged.dirs,
                      "counts": staged.counts, "rows_tagged": staged.rows_tagged,
                      "rows_quarantined": staged.rows_quarantined, "rows_read": self.record.get("rows_read"),
                      "conf": self.record.get("conf"), "model_version": self.record.get("model_version"),
                      "taxonomy_version": self.record.get("taxonomy_version")}
            self.store.write(self.run_dir("publish.json"), json.dumps(intent, default=str))
            try:
                fault("before_commit")
                for name in tables:
                    replace_day(staged.frames[name], self.conf, name, self.dt, meta={**self.meta, "op": "publish"})
                    self.committed[name] = own_commit(self.spark, self.conf, name, self.pre[name], self.run_id)
                    fault(f"after_commit:{name}")
                verify_published(self.spark, self.conf, self.dt, staged, self.committed)
            except AbandonRun:
                raise
            except BaseException as exc:
                self.notes.append(self.rollback(exc))
                raise
            self.notes.append("published " + (", ".join(f"{n} v{v}" for n, v in self.committed.items()) or "no change"))
        fault("after_publish")

    def rollback(self, exc: BaseException) -> str:
        """Put every table this run committed back to its version before the run (the day only).

        What was committed is read from the tables' histories, not from what this process noted: a
        commit can land and its call still fail (an error after the commit, a lost reply).
        """
        done = []
        for name in reversed(ORDER):
            if name not in self.pre:
                continue
            mine = [c for c in commits_since(self.spark, self.conf, name, self.pre[name])
                    if c.meta.get("run_id") == self.run_id and c.meta.get("dt") == self.dt]
            if mine and mine[-1].meta.get("op") in ("publish", "finish"):
                restore_day(self.spark, self.conf, name, self.dt, self.pre[name], self.meta)
                done.append(f"{name} to v{self.pre[name]}")
        self.committed = {}
        if not done:
            return "nothing was committed"
        return f"rolled back {', '.join(done)} after {type(exc).__name__}"

    # -- 5. finish
    def finish(self, status: str, message: str | None = None) -> None:
        self.heartbeat.stop()
        self.record.update(status=status, finished_at=utcnow(), seconds=time.time() - self.t0,
                           message=(message or "")[:4000] or None)
        fields = {k: self.record.get(k) for k in ("rows_read", "rows_tagged", "rows_quarantined", "finished_at",
                                                   "seconds", "status", "message", "model_version",
                                                   "taxonomy_version")}
        update_run(self.spark, self.conf, self.run_id, fields)
        self.store.remove(self.run_dir())


def run_day(
    spark: SparkSession,
    conf: dict[str, Any],
    *,
    job: str,
    dt: str,
    run_id: str,
    record: dict[str, Any],
    compute: Callable[[DayRun], DayOutput],
    audit: Callable[[DayRun, Staged], list[str]] | None = None,
    after_publish: Callable[[DayRun], str | None] | None = None,
) -> DayRun:
    """Run one day of a job through begin, write, audit, publish and finish; raise after recording a
    failure. ``compute`` builds the day's frames; ``audit`` adds the job's checks of the staged rows;
    ``after_publish`` runs once the day is published (its failure fails the run, the day stays
    published). Returns the finished :class:`DayRun` (``record`` holds the ``tag_runs`` fields)."""
    day = DayRun(spark, conf, job, dt, run_id, record)
    runs = day.begin()
    try:
        day.settle(runs)
        output = compute(day)
        day.notes = [*output.notes, *day.notes]
        staged = day.stage(output)
        day.audit(audit(day, staged) if audit else None)
        fault("after_stage")
        day.publish()
        if after_publish is not None:
            note = after_publish(day)
            if note:
                day.notes.append(note)
    except AbandonRun:
        day.heartbeat.stop()
        day.store.remove(day.heartbeat.path)  # dead from now on, as after a SIGKILL
        raise
    except BaseException as exc:
        message = "; ".join([f"{type(exc).__name__}: {exc}", *[n for n in day.notes if n]])
        try:
            day.finish(FAILED, message)
        except Exception as rec_exc:  # noqa: BLE001 - the original error matters more
            print(f"vtag: warning: could not record the failed run {run_id}: {rec_exc}")
        raise
    day.finish(SUCCEEDED, "; ".join(n for n in day.notes if n))
    return day
