"""The pure parts of #18's fixes, without Spark: cover URI normalisation, schema reconciliation, the
day lock and liveness, the publish settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pyarrow as pa
import pytest


@pytest.mark.parametrize("uri,want", [
    ("/D/x.jpg", ("/D/x.jpg", None)),
    ("/D/../D/x.jpg", ("/D/x.jpg", None)),
    ("file:///D//a/./../x.jpg", ("/D/x.jpg", None)),
    ("file:/D/x.jpg", ("/D/x.jpg", None)),
    ("file://localhost/D/x.jpg", ("/D/x.jpg", None)),
    ("  /D/x.jpg ", ("/D/x.jpg", None)),
    ("/D", ("/D", None)),
    (None, (None, None)),
    ("", (None, None)),
])
def test_cover_uris_inside_the_root_normalise_to_one_path(uri, want):
    from vtag.jobs.pipeline.covers import normalize_uri

    assert normalize_uri(uri, "/D") == want


@pytest.mark.parametrize("uri,why", [
    ("file:///etc/passwd", "outside"), ("/D/../etc/passwd", "outside"), ("/Dx/y.jpg", "outside"),
    ("x.jpg", "relative"), ("covers/x.jpg", "relative"), ("file:x.jpg", "relative"),
    ("file://otherhost/D/x.jpg", "outside"), ("s3a://bucket/D/x.jpg", "outside"), ("/D/x\x00.jpg", "NUL"),
])
def test_cover_uris_outside_the_root_are_refused(uri, why):
    from vtag.jobs.pipeline.covers import normalize_uri

    path, problem = normalize_uri(uri, "/D")
    assert path is None and why in problem


def test_symlinks_leaving_the_cover_root_are_outside_it(tmp_path):
    from vtag.jobs.pipeline.covers import _local_sources, normalize_uri, real_root

    root, d = tmp_path / "dump", tmp_path / "dump" / "covers"
    d.mkdir(parents=True)
    (d / "x.jpg").write_bytes(b"jpeg")
    (tmp_path / "outside.jpg").write_bytes(b"jpeg")
    (d / "in-link.jpg").symlink_to(d / "x.jpg")
    real = real_root(str(root))
    assert normalize_uri(f"{d}/in-link.jpg", str(root), real) == (f"{d}/in-link.jpg", None)
    assert _local_sources(str(d), real) == [str(d)]  # nothing leaves the root: the directory is read
    (d / "out.jpg").symlink_to(tmp_path / "outside.jpg")
    (d / "passwd.jpg").symlink_to("/etc/passwd")
    (tmp_path / "elsewhere").mkdir()
    for name in ("out.jpg", "passwd.jpg"):
        path, problem = normalize_uri(f"{d}/{name}", str(root), real)
        assert path is None and "symlink" in problem
    assert normalize_uri(f"{d}/out.jpg", str(root))[0] == f"{d}/out.jpg"  # without the real root: names only
    # the directory is read file by file, without the links that leave the root
    assert _local_sources(str(d), real) == [f"{d}/in-link.jpg", f"{d}/x.jpg"]
    (root / "escape").symlink_to(tmp_path / "elsewhere")
    assert _local_sources(str(root / "escape"), real) == []


def test_cover_root_defaults_to_the_dump_root_and_takes_uris(tmp_path):
    from vtag.jobs.config import ConfigError
    from vtag.jobs.pipeline.covers import cover_policy, cover_root, normalize_uri

    assert cover_root({}, str(tmp_path / "a" / ".." / "dump")) == str(tmp_path / "dump")
    assert cover_root({"cover_root": "s3a://b/covers/"}, "/x") == "s3a://b/covers"
    assert normalize_uri("s3a://b/covers/../covers/1.jpg", "s3a://b/covers") == ("s3a://b/covers/1.jpg", None)
    assert cover_policy({}) == "missing"
    with pytest.raises(ConfigError):
        cover_policy({"cover_outside_root": "ignore"})


def test_schema_reconciliation():
    from vtag.jobs.pipeline.dumps import reconcile

    base = {"video_id": pa.string(), "title": pa.string(), "uploader_id": pa.string(), "upload_ts": pa.timestamp("ns")}

    def schema(**over):
        fields = {**base, **over}
        return pa.schema([(k, v) for k, v in fields.items() if v is not None])

    assert reconcile(schema()) is None  # timestamp[ns]: cast
    assert reconcile(schema(duration_s=pa.int64(), upload_ts=pa.timestamp("ms", tz="Asia/Shanghai"))) is None
    assert reconcile(schema(duration_s=pa.string(), title=pa.large_string())) is None  # per value
    assert reconcile(schema(video_id=pa.dictionary(pa.int32(), pa.string()))) is None
    assert reconcile(schema(upload_ts=pa.date32(), cover=pa.large_binary())) is None
    assert "video_id" in reconcile(schema(video_id=None))
    assert "title" in reconcile(schema(title=pa.list_(pa.string())))
    assert "duration_s" in reconcile(schema(duration_s=pa.struct([("a", pa.int32())])))
    assert "upload_ts" in reconcile(schema(upload_ts=pa.binary()))


def test_the_day_lock_waits_for_a_live_holder_and_takes_over_from_a_dead_one(tmp_path):
    from vtag.jobs.pipeline.publish_guard import DayBusyError, DayLock, Heartbeat, PublishSettings, Store

    store = Store(None, str(tmp_path))
    fast = PublishSettings(heartbeat_s=0.2, stale_after_s=30, lock_timeout_s=1)
    live = Heartbeat(store, "run-a", fast)
    live.start()
    try:
        with DayLock(store, "2026-12-01", "run-a", fast):
            with pytest.raises(DayBusyError, match="run-a"):
                with DayLock(store, "2026-12-01", "run-b", fast):
                    pass
    finally:
        live.stop()
    # a holder whose process is gone (same host): its lock is taken over at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    record = {"run_id": "run-dead", "host": os.uname().nodename, "pid": pid, "start": None, "t": time.time()}
    store.write(store.path("run-dead", "heartbeat"), json.dumps(record))
    store.write(store.path("_locks", "dt=2026-12-02.lock"), json.dumps(record))
    with DayLock(store, "2026-12-02", "run-c", fast) as lock:
        assert json.loads(store.read(lock.path))["run_id"] == "run-c"
    assert not os.path.exists(store.path("_locks", "dt=2026-12-02.lock"))


def test_liveness():
    from vtag.jobs.pipeline.publish_guard import PublishSettings, _me, is_alive

    s = PublishSettings(stale_after_s=60)
    me = _me("x")
    assert is_alive(me, s)
    assert not is_alive({**me, "t": time.time() - 61}, s)  # stale heartbeat
    assert not is_alive({**me, "start": "0"}, s)  # the pid now belongs to another process
    assert is_alive({**me, "host": "elsewhere", "pid": 1}, s)  # another host: trusted until stale
    assert not is_alive(None, s)


def test_publish_settings_are_checked():
    from vtag.jobs.config import ConfigError
    from vtag.jobs.pipeline.publish_guard import publish_settings

    assert publish_settings({}).stale_after_s == 60
    assert publish_settings({"publish": {"stale_after_s": "5"}}).stale_after_s == 5.0
    with pytest.raises(ConfigError, match="publish.nope"):
        publish_settings({"publish": {"nope": 1}})
    with pytest.raises(ConfigError, match="> 0"):
        publish_settings({"publish": {"heartbeat_s": 0}})
