"""Upload context: hashed uploader / source-program ids and log-spaced duration buckets.

Tensors: ``uploader [B, K]`` and ``program [B, K]`` int64 — K = ``context.n_hashes`` independent
stable hashes (crc32 of the UTF-8 id with K salts) into ``1..buckets`` (0 = null; the K embeddings
are summed, which makes a collision of two ids on all K tables unlikely); ``duration [B]`` int64 —
0 = null, 1 = ``<= 1 s``, then log-spaced buckets up to ``context.duration_max_s``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from vtag.models.text import as_text, stable_hash


def hash_ids(values: Sequence, buckets: int, n_hashes: int, salt: int) -> np.ndarray:
    """``[B, n_hashes]`` int64 bucket ids in 1..buckets, 0 for null / empty."""
    out = np.zeros((len(values), n_hashes), dtype=np.int64)
    for i, v in enumerate(values):
        s = as_text(v)
        if s:
            for k in range(n_hashes):
                out[i, k] = stable_hash(s, salt * 1_000_003 + k) % buckets + 1
    return out


def uploader_keys(values: Sequence) -> np.ndarray:
    """``[B]`` int64 62-bit stable keys of the uploader ids (blake2b), 0 for null / empty: exact ids
    for the sparse wide path's uploader columns (``head.tfidf_wide_uploader: exact``), where hashing
    ~6k uploaders into 50k buckets would merge one in ten of them with another."""
    import hashlib

    out = np.zeros(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        s = as_text(v)
        if s:
            h = int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")
            out[i] = max(1, h & ((1 << 62) - 1))
    return out


def key_set(keys: np.ndarray, max_keys: int = 0) -> np.ndarray:
    """Sorted unique non-zero keys ``[U]`` int64; ``max_keys`` > 0 keeps the most frequent ones (ties:
    the smaller key)."""
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    uniq, counts = np.unique(keys[keys > 0], return_counts=True)
    if max_keys and uniq.size > max_keys:
        uniq = np.sort(uniq[np.lexsort((uniq, -counts))[:max_keys]])
    return uniq


def duration_edges(n_buckets: int, max_s: float) -> np.ndarray:
    """Upper edges of buckets 1..n_buckets-2: log-spaced from 1 s to ``max_s``."""
    return np.geomspace(1.0, float(max_s), num=max(n_buckets - 2, 1))


def duration_buckets(values: Sequence, n_buckets: int, max_s: float) -> np.ndarray:
    """``[B]`` int64 in 0..n_buckets-1: 0 = null/NaN/negative, 1 = <= 1 s, ..., last = > max_s."""
    edges = duration_edges(n_buckets, max_s)
    out = np.zeros(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isnan(x) or x < 0:
            continue
        out[i] = 1 + int(np.searchsorted(edges, x, side="left"))
    return np.minimum(out, n_buckets - 1)


class ContextFeaturizer:
    """Frame columns -> ``uploader``, ``program``, ``duration`` arrays; ``cfg`` = ``context`` section."""

    def __init__(self, cfg: dict):
        self.cfg = cfg

    def transform(self, uploaders: Sequence, programs: Sequence, durations: Sequence) -> dict[str, np.ndarray]:
        c = self.cfg
        k = int(c["n_hashes"])
        return {
            "uploader": hash_ids(uploaders, int(c["uploader_buckets"]), k, salt=11),
            "program": hash_ids(programs, int(c["program_buckets"]), k, salt=23),
            "duration": duration_buckets(durations, int(c["duration_buckets"]), float(c["duration_max_s"])),
        }


class ContextEncoder(nn.Module):
    """Sum-of-hashes embeddings of uploader and program + a duration embedding (+ with
    ``profile_dim`` a ReLU projection of the uploader profile ``[B, profile_dim]``), concatenated,
    then a ReLU layer: batch -> ``[B, out_dim]``.

    Id embeddings start at zero, so an id never seen in training (its buckets untouched by any
    gradient) encodes exactly like a null id instead of like a random vector the rest of the model
    was never trained on — new uploaders are the normal case at prediction time. ``id_dropout``:
    during training a row's uploader and program ids are each replaced by null with this
    probability, so the model also learns to classify without them (otherwise it memorises the
    training uploaders and has little to fall back on for unseen ones)."""

    def __init__(self, cfg: dict, profile_dim: int = 0):
        super().__init__()
        d = int(cfg["dim"])
        # uploader profile [B, profile_dim] (models/profiles.py) -> [B, d]; zero for a new uploader
        self.profile = nn.Sequential(nn.Linear(profile_dim, d), nn.ReLU()) if profile_dim else None
        self.uploader = nn.EmbeddingBag(int(cfg["uploader_buckets"]) + 1, d, mode="sum", padding_idx=0)
        self.program = nn.EmbeddingBag(int(cfg["program_buckets"]) + 1, d, mode="sum", padding_idx=0)
        with torch.no_grad():
            self.uploader.weight.zero_()
            self.program.weight.zero_()
        self.duration = nn.Embedding(int(cfg["duration_buckets"]), d)
        n_in = 4 * d if profile_dim else 3 * d
        self.mix = nn.Sequential(nn.Linear(n_in, d), nn.ReLU(), nn.Dropout(float(cfg.get("dropout") or 0.0)))
        self.id_dropout = float(cfg.get("id_dropout") or 0.0)
        self.out_dim = d

    def _drop_ids(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.training or self.id_dropout <= 0.0 or ids.numel() == 0:
            return ids
        keep = torch.rand(ids.shape[0], 1, device=ids.device) >= self.id_dropout
        return ids * keep.to(ids.dtype)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.uploader(self._drop_ids(batch["uploader"])), self.program(self._drop_ids(batch["program"])),
                 self.duration(batch["duration"])]
        if self.profile is not None:
            parts.append(self.profile(batch["profile"]))
        return self.mix(torch.cat(parts, dim=1))
