"""jobs/spark/worker_daemon.py: Spark's Python workers fork from a daemon that imported torch first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vtag.jobs.spark import worker_daemon


def test_preload_imports_what_is_installed_and_skips_the_rest():
    done = worker_daemon.preload(("json", "vtag_no_such_module_x", "vtag.models.schema"))
    assert done == ["json", "vtag.models.schema"]
    assert "vtag.models.schema" in sys.modules


def test_preload_survives_a_failing_import_and_keeps_stdout_for_the_port(tmp_path):
    """The daemon's stdout carries its port to the JVM: what the preloaded modules print, from Python
    or from C, goes to stderr; a module raising on import is skipped, not fatal."""
    (tmp_path / "noisy_mod.py").write_text(
        "import os, sys\nprint('from python')\nsys.stdout.flush()\nos.write(1, b'from C\\n')\n", encoding="utf-8")
    (tmp_path / "broken_mod.py").write_text("raise OSError('libcuda.so: cannot open shared object file')\n",
                                            encoding="utf-8")
    code = ("from vtag.jobs.spark.worker_daemon import preload; "
            "import sys; done = preload(('broken_mod', 'noisy_mod')); print('port', done)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "port ['noisy_mod']\n"
    assert "from python" in out.stderr and "from C" in out.stderr
    assert "not preloading broken_mod: OSError" in out.stderr


def test_the_job_confs_select_the_daemon():
    from vtag import conf_dir

    for name in ("local.yaml", "cluster.yaml"):
        text = (Path(conf_dir()) / "jobs" / name).read_text(encoding="utf-8")
        assert "spark.python.daemon.module: vtag.jobs.spark.worker_daemon" in text, name


@pytest.mark.spark
@pytest.mark.slow  # ~13 s when it starts the session's daemon (torch + timm imports)
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
