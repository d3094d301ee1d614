"""Write, audit, publish: one day's rows go to ``video_tags`` and ``video_tags_quarantine`` as one unit.

Both ``vtag tag`` and ``vtag retag run`` publish a day through :func:`run_day`. The protocol, per run:

1. **begin** -- the run's heartbeat file is written (``<warehouse>/_vtag_runs/<run_id>/heartbeat``,
   refreshed every ``publish.heartbeat_s`` by a daemon thread), runs of the same day that were left
   ``started`` by a process that is gone are settled (:func:`recover_day`, see below), and the run's
   ``tag_runs`` row is appended with status ``started``.
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
   is put back to its version before the run, **for that day only** (:func:`restore_day`: the day's
   rows as of that version written back with ``replaceWhere``). ``RESTORE TABLE ... TO VERSION AS OF``
   would also roll back the other days that concurrent runs committed in between, so it is not used.
   A run that finds that another run published its day after it began is refused (``superseded``):
   of two runs of one day at once, the first to publish wins and the other fails, writing nothing.
5. **finish** -- the ``tag_runs`` row is updated in place (one row per run) with its counts, timings,
   status and a message naming the committed versions; the staging directory is removed.

A run killed by SIGKILL (or a lost driver) stops its heartbeat and leaves its row ``started``. The
next run of the same day, or ``vtag tag --date D --repair``, finds it (:func:`recover_day`): a run
whose heartbeat is stale (or whose process is gone, on the same host) is dead. What its
``publish.json`` and the tables' Delta histories say decides what is done:

- killed before its commits: nothing was written; the row becomes ``killed``;
- killed between the commits (a day that mixes two runs across the tables): the next run rolls the
  committed table back (``killed``); ``--repair`` finishes it instead from its staged files (the
  audit had passed), or with ``--rollback`` rolls it back;
- killed after both commits: the day is wholly its; ``--repair`` records it ``succeeded`` (the tag
  job then refreshes the profiles), the next run records it ``killed`` (and replaces the day anyway).

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
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from vtag.jobs.pipeline.publish_guard import (  # noqa: F401  (re-exported: callers import them from here)
    RUNS_DIR,
    DayBusyError,
    DayLock,
    Heartbeat,
    PublishSettings,
    Store,
    _me,
    is_alive,
    publish_settings,
    read_json,
    run_alive,
    store_for,
)
from vtag.jobs.warehouse.tables import (
    TABLES,
    append_run,
    conform,
    ensure_table,
    replace_day,
    table_path,
    utcnow,
    with_retries,
)

#: the commit order of a day's tables: the quarantine first, ``video_tags`` (what most readers read) last
ORDER = ("video_tags_quarantine", "video_tags")
STARTED, SUCCEEDED, FAILED, KILLED = "started", "succeeded", "failed", "killed"
FAULT_ENV = "VTAG_FAULT_INJECT"


class AuditError(RuntimeError):
    """The staged rows of a day fail the audit (invariant, duplicate ids): nothing was published."""


class SupersededError(RuntimeError):
    """Another run published the day after this one began: this run publishes nothing."""


class AbandonRun(BaseException):  # noqa: N818 - a stand-in for SIGKILL, not an error
    """``VTAG_FAULT_INJECT=<point>=abandon``: the run stops as if killed (tests only)."""


class RepairError(RuntimeError):
    """``vtag tag --repair`` cannot act (a run is still alive, a table changed under it...)."""


# ----------------------------------------------------------------------------------- Delta helpers
def table_version(spark: SparkSession, conf: dict[str, Any], name: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, table_path(conf, name)).history(1).first().version)


@dataclass
class Commit:
    version: int
    operation: str
    meta: dict[str, Any]


def commits_since(spark: SparkSession, conf: dict[str, Any], name: str, version: int) -> list[Commit]:
    """The commits of table ``name`` after ``version``, oldest first, with their ``userMetadata``."""
    from delta.tables import DeltaTable

    hist = DeltaTable.forPath(spark, table_path(conf, name)).history()
    out = []
    for h in hist.where(F.col("version") > version).select("version", "operation", "userMetadata").collect():
        try:
            meta = json.loads(h.userMetadata) if h.userMetadata else {}
        except ValueError:
            meta = {}
        out.append(Commit(int(h.version), str(h.operation), meta if isinstance(meta, dict) else {}))
    return sorted(out, key=lambda c: c.version)


def day_rows(spark: SparkSession, conf: dict[str, Any], name: str, dt: str, version: int | None = None) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", int(version))
    return reader.load(table_path(conf, name)).where(F.col("dt") == F.lit(dt).cast("date"))


def restore_day(spark: SparkSession, conf: dict[str, Any], name: str, dt: str, version: int, meta: dict) -> None:
    """Put day ``dt`` of table ``name`` back to its rows as of ``version`` (one ``replaceWhere`` commit).

    Columns the table gained since ``version`` (``video_tags_quarantine.detail``) come back null. Other
    days are not touched, unlike ``RESTORE TABLE``.
    """
    old = day_rows(spark, conf, name, dt, version)
    missing = [f for f in conform_fields(name) if f.name not in old.columns]
    for f in missing:
        old = old.withColumn(f.name, F.lit(None).cast(f.dataType))
    replace_day(old, conf, name, dt, meta={**meta, "op": "rollback", "to_version": int(version)})


def conform_fields(name: str):
    from vtag.jobs.spark.schema import to_spark

    return to_spark(TABLES[name].schema).fields


# ----------------------------------------------------------------------------------- tag_runs
def runs_of_day(spark: SparkSession, conf: dict[str, Any], dt: str) -> list[dict[str, Any]]:
    path = table_path(conf, "tag_runs")
    rows = spark.read.format("delta").load(path).where(F.col("dt") == F.lit(dt).cast("date")).collect()
    return [r.asDict() for r in rows]


def _quiet_update_warning(spark: SparkSession) -> None:
    """Delta's UPDATE warns "Could not validate number of records due to missing statistics" on every
    ``tag_runs`` update; the row count is not what we rely on."""
    try:
        jvm = spark.sparkContext._jvm
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            "org.apache.spark.sql.delta.commands.UpdateCommand", jvm.org.apache.logging.log4j.Level.ERROR)
    except Exception:  # noqa: BLE001 - only a log level
        pass


def update_run(spark: SparkSession, conf: dict[str, Any], run_id: str, fields: dict[str, Any]) -> None:
    """Update the ``tag_runs`` row of ``run_id`` in place (Delta UPDATE; conflicts retried)."""
    from delta.tables import DeltaTable

    from vtag.jobs.spark.schema import to_spark
    from vtag.models.schema import TAG_RUNS_SCHEMA

    _quiet_update_warning(spark)
    types = {f.name: f.dataType for f in to_spark(TAG_RUNS_SCHEMA).fields}
    sets = {}
    for key, value in fields.items():
        if key == "dt" and isinstance(value, str):
            value = date.fromisoformat(value)
        sets[key] = F.lit(value).cast(types[key])
    path = table_path(conf, "tag_runs")
    with_retries(lambda: DeltaTable.forPath(spark, path).update(F.col("run_id") == F.lit(run_id), sets), attempts=8)


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


# ----------------------------------------------------------------------------------- the run
@dataclass
class DayOutput:
    """What a job computed for its day (lazy frames, written once by :meth:`DayRun.stage`).

    ``frames``: table name -> rows to publish (any superset of the table's columns); ``rows_read``:
    the rows the day's input held (None: no invariant check); ``notes``: for ``tag_runs.message``.
    """

    frames: dict[str, DataFrame]
    rows_read: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Staged:
    """The staged rows of a day (read back from the staging Parquet) and their audited counts."""

    frames: dict[str, DataFrame]
    dirs: dict[str, str]
    counts: dict[str, int]  # table -> staged rows
    rows_tagged: int
    rows_quarantined: int  # weighted: a file-level entry counts the rows its footer gave


@dataclass
class Recovered:
    """What :func:`recover_day` did with one dead run."""

    run_id: str
    job: str
    action: str  # nothing_written | rolled_back | finished | published | superseded
    status: str
    message: str
    intent: dict[str, Any] | None = None


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
    def begin(self) -> None:
        for name in ("tag_runs", *ORDER):
            ensure_table(self.spark, self.conf, name)
        existing = [r for r in runs_of_day(self.spark, self.conf, self.dt) if r["run_id"] == self.run_id]
        if existing:
            raise ValueError(f"run id {self.run_id} is already recorded in tag_runs ({existing[0]['status']})")
        self.heartbeat.start()
        try:
            append_run(self.spark, self.conf, {**self.record, "status": STARTED})
        except BaseException:
            self.heartbeat.stop()
            self.store.remove(self.run_dir())
            raise

    def settle(self) -> None:
        """Settle the dead runs of the day and note the tables' versions this run starts from."""
        self.notes += [r.message for r in settle_dead_runs(self.spark, self.conf, self.dt, self.run_id, self.settings)]
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
                staged.counts[n] or day_rows(self.spark, self.conf, n, self.dt, self.pre[n]).limit(1).count())]
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


def own_commit(spark: SparkSession, conf: dict[str, Any], name: str, after: int, run_id: str) -> int:
    """The version of ``run_id``'s publish commit of ``name`` after version ``after``."""
    for c in reversed(commits_since(spark, conf, name, after)):
        if c.meta.get("run_id") == run_id and c.meta.get("op") in ("publish", "finish"):
            return c.version
    raise RuntimeError(f"{name}: no commit of run {run_id} after v{after}")


def verify_published(spark: SparkSession, conf: dict[str, Any], dt: str, staged: Staged, committed: dict[str, int]):
    """The committed versions hold the staged counts (read back by time travel)."""
    from vtag.jobs.pipeline.validate import quarantined_rows

    for name, version in committed.items():
        rows = day_rows(spark, conf, name, dt, version)
        if name == "video_tags_quarantine":
            r = rows.agg(F.count(F.lit(1)).alias("n"), F.sum(quarantined_rows()).alias("w")).first()
            got, want = (int(r.n), int(r.w or 0)), (staged.counts[name], staged.rows_quarantined)
        else:
            got, want = rows.count(), staged.counts[name]
        if got != want:
            raise AuditError(f"{dt}: {name} v{version} holds {got} rows of the day, the run staged {want}")


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
    day.begin()
    try:
        day.settle()
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


# ----------------------------------------------------------------------------------- recovery
def settle_dead_runs(spark: SparkSession, conf: dict[str, Any], dt: str, me: str, settings: PublishSettings,
                     *, locked: bool = False) -> list[Recovered]:
    """Record the dead runs of day ``dt`` (status still ``started``, process gone) as ``killed`` and roll
    back a half-published one; cheap when there are none. ``locked``: the caller holds the day's lock."""
    store = store_for(spark, conf)
    dead = [r for r in runs_of_day(spark, conf, dt)
            if r["status"] == STARTED and r["run_id"] != me and not run_alive(store, r["run_id"], settings)]
    if not dead:
        return []
    if locked:
        return recover_day(spark, conf, dt, me, mode="settle", settings=settings)
    with DayLock(store, dt, me, settings):
        return recover_day(spark, conf, dt, me, mode="settle", settings=settings)


def recover_day(spark: SparkSession, conf: dict[str, Any], dt: str, me: str, *, mode: str,
                settings: PublishSettings | None = None) -> list[Recovered]:
    """Deal with every dead ``started`` run of day ``dt``; the caller holds the day's lock.

    ``mode``: ``settle`` (the next run's start: roll back a partial publish, record the run
    ``killed``), ``finish`` (``vtag tag --repair``: complete a partial publish from the staged files,
    record a complete one ``succeeded``) or ``rollback`` (``--repair --rollback``: restore every table
    the run committed). A run superseded by a later publish of the day is only recorded.
    """
    if mode not in ("settle", "finish", "rollback"):
        raise ValueError(f"unknown recovery mode {mode!r}")
    settings = settings or publish_settings(conf)
    store = store_for(spark, conf)
    out = []
    for run in sorted(runs_of_day(spark, conf, dt), key=lambda r: r["started_at"] or utcnow()):
        rid = run["run_id"]
        if run["status"] != STARTED or rid == me or run_alive(store, rid, settings):
            continue
        out.append(_recover_run(spark, conf, dt, me, run, mode, store))
    return out


def _recover_run(spark, conf, dt: str, me: str, run: dict, mode: str, store: Store) -> Recovered:
    rid, job = run["run_id"], run["job"]
    intent = read_json(store, store.path(rid, "publish.json"))
    meta = {"job": job, "dt": dt, "run_id": rid, "by": me}
    found = f"found dead by {me}"
    fields: dict[str, Any] = {"finished_at": utcnow()}
    if intent is None:
        rec = Recovered(rid, job, "nothing_written", KILLED,
                        f"run {rid} was killed before publishing ({found}); nothing of it was written")
    else:
        pre = {k: int(v) for k, v in intent["pre"].items()}
        tables = list(intent["tables"])
        committed, later = {}, {}
        rolling_back = False
        for name in tables:
            for c in commits_since(spark, conf, name, pre[name]):
                if c.meta.get("dt") != dt:
                    continue
                if c.meta.get("run_id") == rid and c.meta.get("op") in ("publish", "finish"):
                    committed[name] = c.version
                elif c.meta.get("run_id") == rid and c.meta.get("op") == "rollback":
                    committed.pop(name, None)  # it was rolling back when it died
                    rolling_back = True
                elif c.meta.get("run_id") != rid:
                    later[name] = c.version
        if rolling_back and mode == "finish":
            mode = "rollback"  # it had failed and was undoing its publish: finish that, not the publish
        fields.update(rows_read=intent.get("rows_read"), rows_tagged=intent.get("rows_tagged"),
                      rows_quarantined=intent.get("rows_quarantined"))
        pending = [n for n in tables if n not in committed]
        if later:
            rec = Recovered(rid, job, "superseded", KILLED,
                            f"run {rid} was killed while publishing ({found}); later runs have published the day since "
                            f"({', '.join(f'{n} v{v}' for n, v in later.items())}), so it was left as they wrote it",
                            intent)
        elif mode == "rollback" or (mode == "settle" and pending and committed):
            done = []
            for name in reversed(ORDER):
                if name in committed:
                    restore_day(spark, conf, name, dt, pre[name], meta)
                    done.append(f"{name} to v{pre[name]}")
            what = f"rolled back {', '.join(done)}" if done else "nothing of it was committed"
            rec = Recovered(rid, job, "rolled_back" if done else "nothing_written", KILLED,
                            f"run {rid} was killed while publishing ({found}); {what}", intent)
        elif not pending:
            if mode == "finish":
                rec = Recovered(rid, job, "published", SUCCEEDED,
                                f"run {rid} was killed after publishing {', '.join(f'{n} v{v}' for n, v in committed.items())}; "
                                f"recorded by vtag tag --repair ({me})", intent)
            else:
                rec = Recovered(rid, job, "published", KILLED,
                                f"run {rid} was killed after publishing {', '.join(f'{n} v{v}' for n, v in committed.items())} "
                                f"({found}); the day held its rows", intent)
        elif not committed and mode == "settle":
            rec = Recovered(rid, job, "nothing_written", KILLED,
                            f"run {rid} was killed at its publish before any commit ({found}); nothing of it was written",
                            intent)
        else:  # finish from the staged files
            staged_dirs = intent.get("staged") or {}
            missing = [n for n in pending if not store.exists(staged_dirs.get(n, "") + "/_SUCCESS")]
            if missing:
                raise RepairError(f"{dt}: run {rid} cannot be finished, its staged rows of {missing} are gone; "
                                  "use --repair --rollback")
            for name in ORDER:
                if name in pending:
                    frame = spark.read.schema(_schema(name)).parquet(staged_dirs[name])
                    replace_day(frame, conf, name, dt, meta={**meta, "op": "finish"})
                    committed[name] = own_commit(spark, conf, name, pre[name], rid)
            staged = Staged({}, staged_dirs, {k: int(v) for k, v in intent["counts"].items()},
                            int(intent.get("rows_tagged") or 0), int(intent.get("rows_quarantined") or 0))
            verify_published(spark, conf, dt, staged, committed)
            rec = Recovered(rid, job, "finished", SUCCEEDED,
                            f"run {rid} was killed while publishing; vtag tag --repair ({me}) finished it from its staged "
                            f"rows: published {', '.join(f'{n} v{v}' for n, v in committed.items())}", intent)
    fields.update(status=rec.status, message=rec.message[:4000])
    update_run(spark, conf, rid, fields)
    store.remove(store.path(rid))
    return rec


def _schema(name: str):
    from vtag.jobs.spark.schema import to_spark

    return to_spark(TABLES[name].schema)


def repair_day(spark: SparkSession, conf: dict[str, Any], dt: str, *, rollback: bool = False) -> list[Recovered]:
    """``vtag tag --date D --repair``: finish (or with ``rollback`` undo) the dead runs of day ``dt``.

    Refuses while a run of the day is still alive (its heartbeat is fresh).
    """
    settings = publish_settings(conf)
    for name in ("tag_runs", *ORDER):
        ensure_table(spark, conf, name)
    store = store_for(spark, conf)
    me = f"repair-{dt}-{uuid.uuid4().hex[:12]}"
    alive = [r["run_id"] for r in runs_of_day(spark, conf, dt)
             if r["status"] == STARTED and run_alive(store, r["run_id"], settings)]
    if alive:
        raise RepairError(f"{dt}: run(s) {alive} are still alive (heartbeat younger than "
                          f"{settings.stale_after_s:.0f} s); stop them first or wait")
    hb = Heartbeat(store, me, settings)
    hb.start()
    try:
        with DayLock(store, dt, me, settings):
            return recover_day(spark, conf, dt, me, mode="rollback" if rollback else "finish", settings=settings)
    finally:
        hb.stop()
        store.remove(store.path(me))
