"""``--threads N`` from the command line sizes the BLAS pools; a bench imports this before numpy/torch."""

from __future__ import annotations

import os
import sys


def size_blas_pools(argv: list[str] | None = None, default: str = "1") -> str:
    """The value of ``--threads`` in ``argv`` (default ``sys.argv``), else ``default``; set as
    OMP/OpenBLAS/MKL thread counts unless the environment already sets them. Returns it."""
    argv = sys.argv if argv is None else argv
    threads = default
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            threads = argv[i + 1]
        elif a.startswith("--threads="):
            threads = a.split("=", 1)[1]
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    return threads
