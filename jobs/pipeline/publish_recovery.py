"""Recovery of a day's dead runs: what :mod:`vtag.jobs.pipeline.publish` does at a run's start and
what ``vtag tag --date D --repair`` does.

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
"""

from __future__ import annotations

import uuid
from typing import Any

from pyspark.sql import SparkSession

from vtag.jobs.pipeline.publish_guard import (
    DayLock,
    Heartbeat,
    PublishSettings,
    Store,
    publish_settings,
    read_json,
    run_alive,
    store_for,
)
from vtag.jobs.pipeline.publish_state import (
    KILLED,
    ORDER,
    STARTED,
    SUCCEEDED,
    Recovered,
    Staged,
    commits_since,
    own_commit,
    restore_day,
    runs_of_day,
    table_schema,
    update_run,
    verify_published,
)
from vtag.jobs.warehouse.tables import ensure_table, replace_day, utcnow


class RepairError(RuntimeError):
    """``vtag tag --repair`` cannot act (a run is still alive, a table changed under it...)."""


def settle_dead_runs(spark: SparkSession, conf: dict[str, Any], dt: str, me: str, settings: PublishSettings,
                     *, locked: bool = False, runs: list[dict[str, Any]] | None = None) -> list[Recovered]:
    """Record the dead runs of day ``dt`` (status still ``started``, process gone) as ``killed`` and roll
    back a half-published one; cheap when there are none. ``locked``: the caller holds the day's lock.
    ``runs``: the day's ``tag_runs`` rows as the caller has just read them (saves one read; the
    recovery itself, under the lock, reads them again)."""
    store = store_for(spark, conf)
    dead = [r for r in (runs_of_day(spark, conf, dt) if runs is None else runs)
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
                    frame = spark.read.schema(table_schema(name)).parquet(staged_dirs[name])
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
