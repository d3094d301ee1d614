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


def default_dir(prefix: str | os.PathLike | None = None) -> Path:
    """``<prefix>/share/vtag/delta-jars``: inside the virtual environment that runs vtag (``prefix``:
    that environment, default ``sys.prefix``; the Airflow DAGs name the project's venv)."""
    return Path(prefix or sys.prefix) / "share" / "vtag" / "delta-jars"


def jars_in(folder: str | os.PathLike | None) -> list[str]:
    """The ``*.jar`` files of ``folder``, sorted (none when it is missing).

    Parameters
    ----------
    folder
        A directory, or None.
    """
    return sorted(glob.glob(os.path.join(str(folder), "*.jar"))) if folder else []


def coordinate(conf: Any, prefix: str | os.PathLike | None = None) -> str:
    """The Maven coordinate of Delta for ``conf`` (``io.delta:<artifact>:<version>``).

    Parameters
    ----------
    conf
        The job conf (``delta_artifact``, ``delta_jars_version``; without a version: the installed
        delta-spark package's).
    prefix
        The virtual environment whose delta-spark package gives the default version (default: this one).
    """
    jar_version = conf.get("delta_jars_version") or installed_delta_version(prefix)
    return f"io.delta:{conf.get('delta_artifact') or 'delta-spark_4.1_2.13'}:{jar_version}"


def installed_delta_version(prefix: str | os.PathLike | None = None) -> str:
    """The version of the delta-spark Python package of the environment ``prefix`` (default: this one)."""
    if prefix is None:
        from importlib.metadata import version

        return version("delta_spark")
    found = sorted(glob.glob(os.path.join(str(prefix), "lib", "python*", "site-packages", "delta_spark-*.dist-info")))
    if not found:
        raise FileNotFoundError(f"no delta-spark package in {prefix}: set delta_jars_version in the job conf")
    return Path(found[-1]).name.removeprefix("delta_spark-").removesuffix(".dist-info")


def delta_jars(conf: Any, prefix: str | os.PathLike | None = None) -> list[str] | None:
    """The Delta jars to pass as ``spark.jars``: ``delta_jars_dir`` or ``VTAG_DELTA_JARS_DIR`` (must hold
    jars), else the folder ``make venv`` filled (:func:`default_dir`); None: resolve from Maven
    (:func:`coordinate`; no such folder, or ``VTAG_DELTA_JARS=maven``). The one choice of the CLI's
    session (:func:`vtag.jobs.spark.session.build_session`) and the Airflow DAGs' spark-submit.

    Parameters
    ----------
    conf
        The job conf.
    prefix
        The virtual environment that runs the job (default: this one).
    """
    jars_dir = conf.get("delta_jars_dir") or os.environ.get("VTAG_DELTA_JARS_DIR")
    if jars_dir:
        jars = jars_in(jars_dir)
        if not jars:
            raise FileNotFoundError(f"delta_jars_dir {jars_dir} holds no *.jar")
        return jars
    if os.environ.get("VTAG_DELTA_JARS") == "maven":
        return None
    return jars_in(default_dir(prefix) if prefix is not None else default_dir()) or None


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
    from vtag.jobs.config import add_job_conf_args, conf_from_args

    p = argparse.ArgumentParser(prog="python -m vtag.jobs.spark.jars", description=__doc__.splitlines()[0])
    p.add_argument("--dest", help=f"the folder to fill (default {default_dir()})")
    add_job_conf_args(p, warehouse=False)
    p.add_argument("--force", action="store_true", help="resolve again even when the folder holds jars")
    args = p.parse_args(argv)
    dest = Path(args.dest or default_dir())
    if jars_in(dest) and not args.force:
        print(f"{dest}: {len(jars_in(dest))} jars (already resolved; --force to redo)")
        return 0
    jars = fetch(conf_from_args(args), dest)
    print(f"{dest}: {len(jars)} jars")
    return 0


if __name__ == "__main__":
    sys.exit(main())
