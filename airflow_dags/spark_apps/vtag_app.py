"""spark-submit entry point for the vtag jobs: ``spark-submit [options] vtag_app.py <command> [args]``.

Runs ``vtag <command> [args]`` (``vtag.jobs.cli.main``) in the driver that spark-submit started, so the
master, deploy mode, ``--packages`` and ``--conf`` given to spark-submit apply to the job (the job
conf's ``master`` is then ignored: see ``vtag.jobs.spark.session.build_session``). The driver's Python must be the
project's virtual environment (``spark.pyspark.driver.python`` / ``PYSPARK_DRIVER_PYTHON``), where
vtag is installed; the packaged conf is found through the package (:func:`vtag.conf_dir`).

Relative paths in job confs are relative to the repository root: the driver changes to
``$VTAG_HOME`` (default: the repository this file sits in) when that directory exists, and puts it
first on ``sys.path`` (a checkout's ``vtag/`` links to its code, so its own code runs).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    home = os.environ.get("VTAG_HOME") or str(Path(__file__).resolve().parents[2])
    if os.path.isdir(home):
        os.chdir(home)
        if home not in sys.path:
            sys.path.insert(0, home)
    try:
        from vtag.jobs.cli import main as vtag_main
    except ImportError as exc:  # the driver runs another interpreter than the project's
        print(
            f"vtag_app: cannot import the vtag jobs with {sys.executable} ({exc}); set "
            "spark.pyspark.driver.python / PYSPARK_DRIVER_PYTHON to the project's .venv/bin/python",
            file=sys.stderr,
        )
        return 2
    return vtag_main(list(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
