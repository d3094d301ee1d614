# The README's two commands are `make demo` and `make test`; both create or update .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.vtag-installed
PYTEST_ARGS ?=

.PHONY: venv demo test test-cluster test-airflow lint bench-decode clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install -q uv==0.13.8
	$(UV) pip install --python $(PY) -c constraints.txt -e '.[dev,bench]'
	$(PY) -m vtag.jobs.spark.jars   # Delta's jars resolved once into .venv/share/vtag/delta-jars: offline, quiet starts
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vtag demo

# pytest exits 5 when it collected no test: that is a failure here too. The Airflow tests run beside
# pytest (the two suites share no files; the main suite leaves ~15 % of the 2 cores idle waiting on its
# JVM, and the Airflow venv's first install is mostly download), their output printed after it; they run in
# their own venv (.venv-airflow, scripts/airflow_tests.sh) so Airflow's pins never fight ours; the
# report test needs a headless Chromium (Debian's package, scripts/ensure_chromium.sh).
# lint-imports (import-linter, contracts in setup.cfg): the layers vtag.jobs -> vtag.models -> vtag.hierarchy,
# the layers inside vtag.jobs, no cycles.
test: $(STAMP)
	$(VENV)/bin/lint-imports
	bash scripts/ensure_chromium.sh
	@alog=$$(mktemp "$${TMPDIR:-/tmp}/vtag-airflow-tests-XXXXXX.log"); \
	echo "Airflow tests: running beside pytest (.venv-airflow), output at the end"; \
	bash scripts/airflow_tests.sh >"$$alog" 2>&1 & apid=$$!; trap 'kill $$apid 2>/dev/null' INT TERM; \
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	wait $$apid; arc=$$?; \
	echo "==================== Airflow tests (scripts/airflow_tests.sh, exit $$arc) ===================="; \
	cat "$$alog"; rm -f "$$alog"; \
	if [ $$rc -eq 5 ]; then echo "no tests ran: failing"; exit 1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; exit $$arc

# the jobs as separate processes: local-cluster master, a run SIGKILLed mid-write, two days at once
test-cluster: $(STAMP)
	$(PY) -m pytest -m cluster

test-airflow: $(STAMP)
	bash scripts/airflow_tests.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check vtag hierarchy models jobs airflow_dags bench tests scripts
	$(VENV)/bin/lint-imports

bench-decode: $(STAMP)
	$(PY) bench/decode_throughput.py

clean:
	rm -rf warehouse dumps bundles .metastore spark-warehouse metastore_db derby.log
