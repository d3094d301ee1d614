"""PySpark's worker daemon with the model stack imported once, before it forks any worker.

Spark starts one Python daemon per executor (``spark.python.daemon.module``, by default
``pyspark.daemon``) and forks a worker from it for each task that finds no idle worker; idle workers
exit after a minute. Every fresh worker of the tag job imports torch, timm and ``vtag.models``
(~9 s of CPU each, ~4 s of it torch._dynamo through timm -> torchvision), so each worker start —
the first task of a run, and again after a pause longer than Spark's idle timeout — cost that.
This daemon imports them first: a forked worker inherits the modules (copy-on-write pages) and
starts at once. ``conf/jobs/*.yaml`` select it with ``spark.python.daemon.module:
vtag.jobs.spark.worker_daemon``.

Only imports happen before the fork: no torch operation (which would start OpenMP threads a fork
does not carry) and no CUDA initialisation (which a forked child cannot use), so the workers behave
as if they had imported the modules themselves. A module that is missing (timm in a text-only
install) is skipped; the daemon then runs ``pyspark.daemon.manager`` unchanged.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

#: imported by the daemon before it forks: what a tag task's worker imports (vtag.jobs.pipeline.inference
#: loads vtag.models.predictor, whose image branch imports timm)
PRELOAD = ("torch", "timm", "vtag.models.predictor", "vtag.models.factory", "vtag.jobs.pipeline.inference")


def preload(modules: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import ``modules``, skipping any that fails to import; returns the ones imported.

    A failure is never fatal here: a worker that needs the module meets the same error itself, as it
    would under Spark's own daemon, and tasks that do not need it run. Whatever the imports print goes
    to stderr, because the daemon's stdout carries its port to the JVM.

    Parameters
    ----------
    modules
        Module names, imported in order.
    """
    done = []
    with _stdout_to_stderr():
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as err:  # noqa: BLE001 - an optional speed-up must not stop the daemon
                print(f"vtag worker daemon: not preloading {name}: {type(err).__name__}: {err}", file=sys.stderr)
                continue
            done.append(name)
    return done


@contextlib.contextmanager
def _stdout_to_stderr():
    """File descriptor 1 points at stderr inside the block (Python prints and C writes alike)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


if __name__ == "__main__":
    from pyspark import daemon

    preload()
    daemon.manager()
