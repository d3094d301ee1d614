"""What the benches ran on, in words, for their reports: the CPU model and core count, and the GPU."""

from __future__ import annotations

import os
import platform


def cpu_description() -> str:
    """``"CPU <model name from /proc/cpuinfo>, <n> cores"`` (the platform's processor name elsewhere)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"CPU {model}, {os.cpu_count()} cores"


def gpu_name(device: str) -> str | None:
    """The name of the CUDA device ``device`` names (``cuda``, ``cuda:N``); None on a CPU device or
    where CUDA is absent."""
    import torch

    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    dev = torch.device(device)
    return torch.cuda.get_device_name(dev.index if dev.index is not None else torch.cuda.current_device())


def torch_versions(cuda: bool) -> str:
    """``"torch X"`` or ``"torch X, CUDA Y"``."""
    import torch

    return f"torch {torch.__version__}" + (f", CUDA {torch.version.cuda}" if cuda else "")
