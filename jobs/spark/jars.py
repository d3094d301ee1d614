"""Delta's jars, resolved once at set-up into a local folder (#19 item 1).

``make venv`` runs ``python -m vtag.jobs.spark.jars``: a throw-away JVM resolves the Delta package
(``delta_artifact``/``delta_jars_version`` of the job conf, else the pip package's) from Maven into
a private Ivy directory, and its jars are copied to :func:`default_dir`
(``<venv>/share/vtag/delta-jars``). :func:`vtag.jobs.spark.session.build_session` then passes them as
``spark.jars``: no resolution, no Ivy output and no network at run time. ``delta_jars_dir`` (job
conf) or ``VTAG_DELTA_JARS_DIR`` pick another folder; ``VTAG_DELTA_JARS=maven`` forces the old
resolution through Maven at every start (the bench's "before").
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any


def default_dir() -> Path:
    """``<sys.prefix>/share/vtag/delta-jars``: inside the virtual environment that runs vtag."""
    return Path(sys.prefix) / "share" / "vtag" / "delta-jars"


def jars_in(folder: str | os.PathLike | None) -> list[str]:
    """The ``*.jar`` files of ``folder``, sorted (none when it is missing).

    Parameters
    ----------
    folder
        A directory, or None.
    """
    return sorted(glob.glob(os.path.join(str(folder), "*.jar"))) if folder else []


def coordinate(conf: dict[str, Any]) -> str:
    """The Maven coordinate of Delta for ``conf`` (``io.delta:<artifact>:<version>``).

    Parameters
    ----------
    conf
        The job conf (``delta_artifact``, ``delta_jars_version``).
    """
    from importlib.metadata import version

    jar_version = str(conf.get("delta_jars_version") or version("delta_spark"))
    return f"io.delta:{conf.get('delta_artifact') or 'delta-spark_4.1_2.13'}:{jar_version}"


def fetch(conf: dict[str, Any], dest: str | os.PathLike | None = None) -> list[str]:
    """Resolve Delta's jars from Maven once and copy them to ``dest`` (default :func:`default_dir`);
    returns the copied paths. The folder is replaced whole, so it holds exactly one resolution.

    Parameters
    ----------
    conf
        The job conf (for the coordinate).
    dest
        The folder to fill.
    """
    from pyspark.sql import SparkSession

    dest = Path(dest or default_dir())
    with tempfile.TemporaryDirectory(prefix="vtag-ivy-") as ivy:
        spark = (SparkSession.builder.master("local[1]").appName("vtag-fetch-jars")
                 .config("spark.jars.packages", coordinate(conf)).config("spark.jars.ivy", ivy)
                 .config("spark.ui.enabled", "false").getOrCreate())
        spark.stop()
        found = jars_in(Path(ivy) / "jars")
        if not found:
            raise RuntimeError(f"resolving {coordinate(conf)} left no jars in {ivy}/jars")
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for jar in found:
            shutil.copy2(jar, tmp / Path(jar).name)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return jars_in(dest)


def main(argv: list[str] | None = None) -> int:
    """``python -m vtag.jobs.spark.jars [--dest DIR] [--force]``; returns the exit status.

    Parameters
    ----------
    argv
        The arguments (default: the process's).
    """
    from vtag.jobs.config import load_job_conf

    p = argparse.ArgumentParser(prog="python -m vtag.jobs.spark.jars", description=__doc__.splitlines()[0])
    p.add_argument("--dest", help=f"the folder to fill (default {default_dir()})")
    p.add_argument("--job-conf", help="job conf YAML (default conf/jobs/local.yaml)")
    p.add_argument("--force", action="store_true", help="resolve again even when the folder holds jars")
    args = p.parse_args(argv)
    dest = Path(args.dest or default_dir())
    if jars_in(dest) and not args.force:
        print(f"{dest}: {len(jars_in(dest))} jars (already resolved; --force to redo)")
        return 0
    jars = fetch(load_job_conf(args.job_conf), dest)
    print(f"{dest}: {len(jars)} jars")
    return 0


if __name__ == "__main__":
    sys.exit(main())
