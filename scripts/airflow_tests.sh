#!/usr/bin/env bash
# The Airflow tests (tests/airflow, marker `airflow`) in their own virtual environment, .venv-airflow,
# so that Airflow's pins never fight the project's (.venv). Creates or updates .venv-airflow with uv
# (the Makefile installs .venv/bin/uv), points Airflow at a throw-away AIRFLOW_HOME with a SQLite
# database and this repo's airflow_dags/, migrates it, then runs pytest there. Extra arguments go to
# pytest. The DAGs call the project's jobs through .venv (spark-submit, vtag): make venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

AIRFLOW_VERSION=3.3.2
SPARK_PROVIDER_VERSION=6.3.4
PYTEST_VERSION=9.2.0
VENV=${VTAG_AIRFLOW_VENV:-$ROOT/.venv-airflow}
UV=$ROOT/.venv/bin/uv
STAMP=$VENV/.vtag-airflow-$AIRFLOW_VERSION-spark-$SPARK_PROVIDER_VERSION-pytest-$PYTEST_VERSION

if [ ! -f "$STAMP" ]; then
  if [ ! -x "$UV" ]; then
    echo "airflow_tests.sh: $UV is missing: run 'make venv' first" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    # the project's interpreter (Python 3.11) as the base, not the project's packages
    base=$("$ROOT/.venv/bin/python" -c 'import sys; print(sys._base_executable)')
    "$UV" venv --quiet --python "$base" "$VENV"
  fi
  "$UV" pip install --quiet --python "$VENV/bin/python" \
    "apache-airflow==$AIRFLOW_VERSION" \
    "apache-airflow-providers-apache-spark==$SPARK_PROVIDER_VERSION" \
    "pytest==$PYTEST_VERSION"
  "$VENV/bin/python" -c 'import airflow.sdk, airflow.providers.apache.spark' \
    || { echo "airflow_tests.sh: $VENV has no working Airflow after the install" >&2; exit 1; }
  rm -f "$VENV"/.vtag-airflow-*
  touch "$STAMP"
fi

AIRFLOW_HOME=$(mktemp -d "${TMPDIR:-/tmp}/vtag-airflow-home-XXXXXX")
trap 'rm -rf "$AIRFLOW_HOME"' EXIT
export AIRFLOW_HOME
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/airflow_dags
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$AIRFLOW_HOME/airflow.db
export AIRFLOW__LOGGING__BASE_LOG_FOLDER=$AIRFLOW_HOME/logs
export VTAG_AIRFLOW_TESTS=1   # tests/airflow/conftest.py: a missing Airflow is an error, not a skip
unset PYTHONPATH VIRTUAL_ENV

if ! "$VENV/bin/airflow" db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1; then
  cat "$AIRFLOW_HOME/db-migrate.log" >&2
  echo "airflow_tests.sh: airflow db migrate failed" >&2
  exit 1
fi

rc=0
"$VENV/bin/python" -m pytest -p no:cacheprovider -m airflow tests/airflow "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "airflow_tests.sh: no Airflow test ran: failing" >&2
  exit 1
fi
exit "$rc"
