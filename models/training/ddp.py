"""Distributed data parallel helpers: rank/world, collective stop decisions, the run's device.
Every function is the identity (or a no-op) when ``torch.distributed`` is not initialised."""

from __future__ import annotations

import hashlib
import os
from typing import Sequence


def dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_max(value: float) -> float:
    """MAX over ranks (identity when not distributed)."""
    import torch
    import torch.distributed as dist

    if dist_info()[1] == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def broadcast(values: Sequence[float]) -> list[float]:
    """Rank 0's ``values`` on every rank."""
    import torch
    import torch.distributed as dist

    if dist_info()[1] == 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64)
    dist.broadcast(t, src=0)
    return t.tolist()


def check_same_vocab(vocab: Sequence[str]) -> None:
    import torch
    import torch.distributed as dist

    if dist_info()[1] == 1:
        return
    h = int(hashlib.sha256("\n".join(vocab).encode()).hexdigest()[:12], 16)
    t = torch.tensor([h, -h], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != h or int(-t[1]) != h:
        raise RuntimeError("ranks fitted different vocabularies or n-gram keys (is Featurizer.fit deterministic?)")


def training_device(device: str | None, rank: int, world: int):
    """The ``torch.device`` this rank trains on: under DDP without an explicit device, the local
    rank's GPU (CPU without CUDA); else :func:`vtag.models.predictor.resolve_device`. A plain ``cuda``
    is pinned to the current index so AMP and DDP see one device."""
    import torch

    from vtag.models.predictor import resolve_device

    if world > 1 and device is None:
        local = int(os.environ.get("LOCAL_RANK", rank))
        dev = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    return dev
