"""jobs/spark/worker_daemon.py: Spark's Python workers fork from a daemon that imported torch first."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vtag.jobs.spark import worker_daemon


def test_preload_imports_what_is_installed_and_skips_the_rest():
    done = worker_daemon.preload(("json", "vtag_no_such_module_x", "vtag.models.schema"))
    assert done == ["json", "vtag.models.schema"]
    assert "vtag.models.schema" in sys.modules


def test_the_job_confs_select_the_daemon():
    from vtag import conf_dir

    for name in ("local.yaml", "cluster.yaml"):
        text = (Path(conf_dir()) / "jobs" / name).read_text(encoding="utf-8")
        assert "spark.python.daemon.module: vtag.jobs.spark.worker_daemon" in text, name


@pytest.mark.spark
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_fork_from_the_daemon_with_torch_loaded(spark):
    """The shared session (conf/jobs/local.yaml) forks its workers from our daemon, and that daemon
    has torch loaded before any task ran in it."""
    assert spark.conf.get("spark.python.daemon.module") == "vtag.jobs.spark.worker_daemon"

    def _parent_of_worker(batches):
        """In a worker (nested, so pickled by value): its parent's command line, and whether the
        parent has torch's library mapped (Linux /proc)."""
        import os

        import pyarrow as pa

        ppid = os.getppid()
        cmd = open(f"/proc/{ppid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        maps = open(f"/proc/{ppid}/maps", encoding="utf-8", errors="replace").read()
        for _ in batches:
            pass
        yield pa.RecordBatch.from_pylist([{"cmd": cmd, "torch": "libtorch" in maps}])

    rows = spark.range(4, numPartitions=2).mapInArrow(_parent_of_worker, "cmd string, torch boolean").collect()
    assert rows and all("vtag.jobs.spark.worker_daemon" in r.cmd for r in rows), [r.cmd for r in rows]
    assert all(r.torch for r in rows)
