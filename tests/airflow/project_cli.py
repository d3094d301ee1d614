"""Running the project's own venv (``.venv``) from the Airflow tests: this process (Airflow's venv)
never imports the project, so test data and bundles are made through its CLI and interpreter."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECT_VENV = Path(os.environ.get("VTAG_VENV") or REPO / ".venv")
TAXONOMY = REPO / "tests" / "data" / "tiny-taxonomy.yaml"
#: a text + context model small enough to train in seconds (the DAGs are under test, not the model)
TINY_MODEL = """
name: tiny-airflow-test
modalities: [text, context]
text: {max_tokens: 16, vocab: {min_count: 1, max_size: 500}, bow: {buckets: 512, dim: 16},
       cnn: {embed_dim: 16, widths: [2, 3], channels: 16, attn_dim: 16}}
context: {dim: 8, uploader_buckets: 256, program_buckets: 64}
fusion: {name: lmf, dim: 32, rank: 2}
head: {name: dhmcn_v3, hidden: 32, local_hidden: 16}
train: {epochs: 1, batch_size: 16, lr: 0.003, patience: 5, val_fraction: 0.2}
decode: {thresholds: 0.5, batch_size: 256}
"""


def project_env() -> dict[str, str]:
    """The environment of a project-venv process: Airflow's venv left out, Spark's Python the project's."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYSPARK_PYTHON=str(PROJECT_VENV / "bin" / "python"), PYSPARK_DRIVER_PYTHON=str(PROJECT_VENV / "bin" / "python"))
    return env


def project(cmd: list[str], timeout: float = 600) -> str:
    """Run a command of the project venv from the repo root; fail the test with its output's tail."""
    proc = subprocess.run(cmd, cwd=REPO, env=project_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc.stdout


def vtag(*args: str) -> str:
    """``.venv/bin/vtag args`` (see :func:`project`)."""
    if not (PROJECT_VENV / "bin" / "vtag").exists():
        pytest.fail(f"{PROJECT_VENV}/bin/vtag is missing: run `make venv` first")
    return project([str(PROJECT_VENV / "bin" / "vtag"), *args])
