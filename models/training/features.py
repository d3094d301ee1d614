"""Training rows as model inputs: frames joined, featurized once (cached) or per batch."""

from __future__ import annotations

import inspect
import logging
from typing import Any

log = logging.getLogger(__name__)


def concat_frames(frames) -> Any:
    import pandas as pd

    if isinstance(frames, pd.DataFrame):
        return frames.reset_index(drop=True)
    frames = list(frames)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


class FeatureSource:
    """Featurized training rows, cached in memory when small enough, else made per batch.

    ``batch(idx)`` -> dict of tensors for the positional indices ``idx`` (a 1-D LongTensor).
    Caching transforms every row once with the eval transform (no augmentation); it is used when
    ``train.cache_features`` is true, or ``auto`` and the tensors fit ``cache_limit_mb``.
    """

    def __init__(self, featurizer, frame, *, cache: Any = "auto", limit_mb: float = 2048, train: bool = True,
                 chunk: int = 512):
        import torch

        self.featurizer = featurizer
        self.frame = frame
        self.train = train
        self._accepts_train = "train" in inspect.signature(featurizer.transform).parameters
        self.cached: dict | None = None
        if cache in (False, "off", "no", None) or len(frame) == 0:
            return
        first = self._transform(frame.iloc[:chunk], train=False)
        per_row = sum(v.element_size() * v.numel() for v in first.values() if isinstance(v, torch.Tensor))
        per_row /= max(1, min(chunk, len(frame)))
        est_mb = per_row * len(frame) / 2**20
        augments = train and self._accepts_train and getattr(featurizer, "image", None) is not None
        if cache == "auto" and (est_mb > float(limit_mb) or augments):
            # uncached: per-batch transforms keep training augmentation and bound memory
            log.info("features: per batch (about %.0f MB if cached)", est_mb)
            return
        parts = [first]
        for start in range(chunk, len(frame), chunk):
            parts.append(self._transform(frame.iloc[start : start + chunk], train=False))
        self.cached = {k: torch.cat([p[k] for p in parts]) for k in first if isinstance(first[k], torch.Tensor)}
        log.info("features: cached %d rows (%.0f MB)", len(frame), est_mb)

    def _transform(self, frame, train: bool):
        if self._accepts_train:
            return self.featurizer.transform(frame, train=train)
        return self.featurizer.transform(frame)

    def batch(self, idx) -> dict:
        if self.cached is not None:
            return {k: v.index_select(0, idx) for k, v in self.cached.items()}
        return self._transform(self.frame.iloc[idx.numpy()], train=self.train)
