"""Optimizer parameter groups and the learning-rate schedule (linear warm-up, cosine decay)."""

from __future__ import annotations

import math
from typing import Any, Mapping


def param_groups(model, settings: Mapping[str, Any]) -> list[dict]:
    """AdamW groups by (kind, decay): kind 0 = ordinary, 1 = image backbone (``backbone_lr_mult``),
    2 = embedding tables and the head's linear ``wide`` path (``embedding_lr_mult``). A table row is
    updated only in the batches that hold its token / n-gram / id, so most rows of a large hashed
    table see few, Adam-sized (~lr) steps: the tables and the linear model on them learn best at a
    higher rate than the deep layers, which overfit at it (fastText trains its bag at 5-10x)."""
    import torch

    lr, wd = float(settings["lr"]), float(settings["weight_decay"])
    mults = {0: 1.0, 1: float(settings["backbone_lr_mult"]), 2: float(settings.get("embedding_lr_mult") or 1.0)}
    tables = {id(m.weight) for m in model.modules() if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))}
    buckets: dict[tuple[int, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kind = 1 if ".backbone." in f".{name}." else 2 if id(p) in tables or ".wide." in f".{name}." else 0
        decay = p.dim() > 1
        buckets.setdefault((kind, decay), []).append(p)
    groups = []
    for (kind, decay), params in sorted(buckets.items()):
        groups.append({
            "params": params,
            "lr": lr * mults[kind],
            "weight_decay": wd if decay else 0.0,
            "base_lr": lr * mults[kind],
        })
    return groups


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_steps(settings: Mapping[str, Any], total_steps: int) -> int:
    """``train.warmup_steps``, or 5 % of all optimizer steps (at most 200) when unset."""
    given = settings["warmup_steps"]
    return min(200, int(0.05 * total_steps)) if given is None else int(given)


def set_lr(optimizer, factor: float) -> None:
    """Every group's lr = its ``base_lr`` x ``factor`` (:func:`lr_factor` of the step)."""
    for grp in optimizer.param_groups:
        grp["lr"] = grp["base_lr"] * factor
