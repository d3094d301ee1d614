"""bench/hardware.py: the CPU and GPU lines of the bench reports."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import hardware  # noqa: E402


def test_cpu_line_names_the_core_count():
    line = hardware.cpu_description()
    assert line.startswith("CPU ") and line.endswith(f", {os.cpu_count()} cores")
    assert "model name" not in line


def test_no_gpu_name_for_a_cpu_device():
    assert hardware.gpu_name("cpu") is None


def test_versions_name_cuda_only_when_asked():
    import torch

    assert hardware.torch_versions(False) == f"torch {torch.__version__}"
    assert hardware.torch_versions(True).startswith(f"torch {torch.__version__}, CUDA ")
