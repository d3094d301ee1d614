"""Returning freed heap to the OS between generator chunks (used by the world cache and the rows)."""

from __future__ import annotations

import pyarrow as pa


def _libc():
    try:
        import ctypes

        lib = ctypes.CDLL("libc.so.6")
        lib.malloc_trim.argtypes = [ctypes.c_size_t]
        return lib
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def release_memory() -> None:
    """Hand freed heap back to the OS (Arrow's pool and glibc's arenas), so a worker's RSS stays
    flat across chunks and tasks instead of keeping its high-water mark."""
    try:
        pa.default_memory_pool().release_unused()
    except AttributeError:
        pass
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
