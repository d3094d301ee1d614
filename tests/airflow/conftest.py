"""The Airflow tests run in .venv-airflow (``scripts/airflow_tests.sh``), never in the project's venv.

In the project's venv (``make test``'s main pytest run) Airflow is not importable: nothing here is
collected, and the run says why at its end. In .venv-airflow — or whenever ``VTAG_AIRFLOW_TESTS=1``,
as the script sets — a missing Airflow is an error. Run alone (``.venv-airflow/bin/python -m pytest
-m airflow tests/airflow``) this file makes a throw-away AIRFLOW_HOME with a migrated SQLite
database itself; the script does the same before pytest starts.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "airflow_dags"
PROJECT_VENV = Path(os.environ.get("VTAG_VENV") or REPO / ".venv")

AIRFLOW_REQUIRED = os.environ.get("VTAG_AIRFLOW_TESTS") == "1" or Path(sys.prefix).name == ".venv-airflow"

def _airflow_installed() -> bool:
    # With tests/ on sys.path this very folder is a namespace package called "airflow" (origin None):
    # only a real, regular package counts.
    spec = importlib.util.find_spec("airflow")
    return spec is not None and spec.origin is not None


HAVE_AIRFLOW = _airflow_installed()
SKIP_REASON = (
    f"tests/airflow not collected: Airflow is not importable in {sys.prefix}; these tests run in "
    ".venv-airflow through scripts/airflow_tests.sh (part of `make test`)"
)

if not HAVE_AIRFLOW:
    if AIRFLOW_REQUIRED:
        raise RuntimeError(
            f"the Airflow tests must run with Airflow, but {sys.executable} cannot import it: "
            "rerun scripts/airflow_tests.sh (it installs apache-airflow into .venv-airflow)"
        )
    collect_ignore_glob = ["test_*.py", "*/test_*.py"]

    def pytest_terminal_summary(terminalreporter):
        terminalreporter.write_line(f"SKIPPED {SKIP_REASON}", yellow=True)

else:

    def _prepare_airflow_home() -> None:
        """Point Airflow at a throw-away home with a migrated SQLite DB unless the caller already did."""
        if os.environ.get("AIRFLOW_HOME") and os.environ.get("VTAG_AIRFLOW_TESTS") == "1":
            return
        home = tempfile.mkdtemp(prefix="vtag-airflow-home-")
        atexit.register(shutil.rmtree, home, True)
        os.environ.update(
            AIRFLOW_HOME=home,
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
            AIRFLOW__LOGGING__BASE_LOG_FOLDER=f"{home}/logs",
        )
        airflow_bin = Path(sys.executable).with_name("airflow")
        subprocess.run([str(airflow_bin), "db", "migrate"], check=True, capture_output=True)

    _prepare_airflow_home()
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
    if str(DAGS) not in sys.path:
        sys.path.insert(0, str(DAGS))

    @pytest.fixture(scope="session")
    def dagbag():
        from airflow.dag_processing.dagbag import DagBag

        return DagBag(dag_folder=str(DAGS))
