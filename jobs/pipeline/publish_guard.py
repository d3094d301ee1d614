"""Who may publish a day, and who is still alive: the publish settings, the file store of run
markers under ``<warehouse>/_vtag_runs`` (local or Hadoop FS), heartbeats, and the per-day lock.
:mod:`vtag.jobs.pipeline.publish` (write, audit, publish) and its recovery use these."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from vtag.jobs.spark.session import _is_local_path
from vtag.jobs.warehouse.tables import (
    table_path,
)

RUNS_DIR = "_vtag_runs"


class DayBusyError(RuntimeError):
    """Another live run holds the day's publish lock for longer than ``publish.lock_timeout_s``."""


# ----------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class PublishSettings:
    """The job conf's ``publish:`` section.

    Parameters
    ----------
    heartbeat_s : float
        How often a run refreshes its heartbeat file.
    stale_after_s : float
        A heartbeat older than this marks its run dead (for runs on other hosts; on the same host a
        run whose process is gone is dead at once).
    lock_timeout_s : float
        How long a run waits for another live run's publish of the same day.
    """

    heartbeat_s: float = 5.0
    stale_after_s: float = 60.0
    lock_timeout_s: float = 900.0


def publish_settings(conf: dict[str, Any]) -> PublishSettings:
    """Read and check the ``publish`` section of a job conf (defaults for absent keys)."""
    from vtag.jobs.config import ConfigError

    section = conf.get("publish") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"publish: expected a mapping, got {section!r}")
    known = {"heartbeat_s", "stale_after_s", "lock_timeout_s"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"unknown job conf key(s) {['publish.' + k for k in unknown]}: publish takes {sorted(known)}")
    values = {}
    for key in known:
        if section.get(key) is None:
            continue
        try:
            values[key] = float(section[key])
        except (TypeError, ValueError):
            raise ConfigError(f"publish.{key}: expected a number of seconds, got {section[key]!r}") from None
        if values[key] <= 0:
            raise ConfigError(f"publish.{key}: must be > 0, got {section[key]!r}")
    return PublishSettings(**values)


# ----------------------------------------------------------------------------------- file store
class Store:
    """Small files under ``<warehouse>/_vtag_runs``: local paths through ``os``, others through Hadoop's
    FileSystem (HDFS ``create(overwrite=false)`` is atomic; on object stores the lock is only as
    atomic as the store's conditional create, as for Delta's own log there)."""

    def __init__(self, spark: SparkSession, root: str):
        self.spark = spark
        self.root = root.rstrip("/")
        self.local = _is_local_path(root)
        if self.local:
            self.root = os.path.abspath(self.root.removeprefix("file:"))

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # -- hadoop helpers
    def _fs(self, path: str):
        jvm = self.spark.sparkContext._jvm
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        return hpath.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration()), hpath

    def write(self, path: str, text: str, *, exclusive: bool = False) -> bool:
        """Write ``text`` to ``path`` (replacing it atomically), or with ``exclusive`` only when ``path``
        does not exist yet (False when it does)."""
        data = text.encode("utf-8")
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if exclusive:
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                return True
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
            return True
        fs, hpath = self._fs(path)
        try:
            out = fs.create(hpath, not exclusive)
        except Exception as exc:  # noqa: BLE001 - py4j wraps FileAlreadyExistsException
            if exclusive and "AlreadyExists" in str(exc):
                return False
            raise
        try:
            out.write(bytearray(data))
        finally:
            out.close()
        return True

    def read(self, path: str) -> str | None:
        if self.local:
            try:
                with open(path, encoding="utf-8") as fh:
                    return fh.read()
            except (FileNotFoundError, NotADirectoryError):
                return None
        fs, hpath = self._fs(path)
        if not fs.exists(hpath):
            return None
        stream = fs.open(hpath)
        try:
            data = self.spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
        finally:
            stream.close()
        return bytes(data).decode("utf-8")

    def rename(self, src: str, dst: str) -> bool:
        if self.local:
            try:
                os.rename(src, dst)
                return True
            except FileNotFoundError:
                return False
        fs, hsrc = self._fs(src)
        return bool(fs.rename(hsrc, self._fs(dst)[1]))

    def remove(self, path: str) -> None:
        if self.local:
            import shutil

            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.remove(path)
            return
        fs, hpath = self._fs(path)
        if fs.exists(hpath):
            fs.delete(hpath, True)

    def exists(self, path: str) -> bool:
        if self.local:
            return os.path.exists(path)
        fs, hpath = self._fs(path)
        return bool(fs.exists(hpath))


def store_for(spark: SparkSession, conf: dict[str, Any]) -> Store:
    return Store(spark, table_path(conf, RUNS_DIR))


# ----------------------------------------------------------------------------------- liveness
def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _me(run_id: str) -> dict[str, Any]:
    return {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(), "start": _proc_start(os.getpid()),
            "t": time.time()}


def is_alive(beat: dict[str, Any] | None, settings: PublishSettings) -> bool:
    """Whether the process of a heartbeat (or lock) record still runs.

    On the same host a process that is gone (or whose pid now belongs to another process) is dead at
    once; otherwise the record is alive while younger than ``stale_after_s``.
    """
    if not beat:
        return False
    if time.time() - float(beat.get("t") or 0) > settings.stale_after_s:
        return False
    if beat.get("host") == socket.gethostname() and beat.get("pid"):
        pid = int(beat["pid"])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        start = _proc_start(pid)
        if beat.get("start") and start and start != beat["start"]:
            return False
    return True


class Heartbeat:
    """A daemon thread that rewrites ``<run dir>/heartbeat`` every ``heartbeat_s`` seconds."""

    def __init__(self, store: Store, run_id: str, settings: PublishSettings):
        self.store, self.run_id, self.settings = store, run_id, settings
        self.path = store.path(run_id, "heartbeat")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        self.store.write(self.path, json.dumps(_me(self.run_id)))

    def start(self) -> None:
        self.beat()

        def loop() -> None:
            while not self._stop.wait(self.settings.heartbeat_s):
                try:
                    self.beat()
                except Exception:  # noqa: BLE001 - a missed beat is retried; the run goes on
                    pass

        self._thread = threading.Thread(target=loop, name=f"vtag-heartbeat-{self.run_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def read_json(store: Store, path: str) -> dict[str, Any] | None:
    text = store.read(path)
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def run_alive(store: Store, run_id: str, settings: PublishSettings) -> bool:
    return is_alive(read_json(store, store.path(run_id, "heartbeat")), settings)


# ----------------------------------------------------------------------------------- the day lock
class DayLock:
    """The publish lock of one day: an exclusively created file naming its holder.

    A lock whose holder is dead (:func:`run_alive`) is taken over; a live holder is waited for up to
    ``lock_timeout_s``.
    """

    def __init__(self, store: Store, dt: str, run_id: str, settings: PublishSettings):
        self.store, self.dt, self.run_id, self.settings = store, dt, run_id, settings
        self.path = store.path("_locks", f"dt={dt}.lock")
        self.held = False

    def __enter__(self) -> DayLock:
        waited_from = time.time()
        while True:
            if self.store.write(self.path, json.dumps(_me(self.run_id)), exclusive=True):
                self.held = True
                return self
            holder = read_json(self.store, self.path)
            if holder is None:  # released meanwhile, or half-written: try again; unreadable for 10 s: stale
                unreadable = getattr(self, "_unreadable", 0) + 1
                self._unreadable = unreadable
                if unreadable > 20:
                    self.store.rename(self.path, f"{self.path}.unreadable-{uuid.uuid4().hex[:6]}")
                    self._unreadable = 0
                time.sleep(0.5)
                continue
            owner = holder.get("run_id")
            if owner == self.run_id:
                self.held = True
                return self
            if not run_alive(self.store, owner, self.settings) and not is_alive(holder, self.settings):
                stolen = f"{self.path}.stale-{self.run_id}-{uuid.uuid4().hex[:6]}"
                if self.store.rename(self.path, stolen):
                    taken = read_json(self.store, stolen) or {}
                    if taken.get("run_id") not in (owner, None):  # took a fresh lock by a hair: put it back
                        self.store.write(self.path, json.dumps(taken), exclusive=True)
                    self.store.remove(stolen)
                continue
            if time.time() - waited_from > self.settings.lock_timeout_s:
                raise DayBusyError(
                    f"{self.dt}: run {owner} is publishing the day and still alive after "
                    f"{self.settings.lock_timeout_s:.0f} s (publish.lock_timeout_s)"
                )
            time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        if self.held:
            holder = read_json(self.store, self.path) or {}
            if holder.get("run_id") == self.run_id:
                self.store.remove(self.path)
            self.held = False
