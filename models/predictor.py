"""``Predictor``: a model bundle behind one call, ``predict(pandas.DataFrame) -> pandas.DataFrame``.

This is the only thing the Spark tagging job calls (once per Python worker: ``Predictor.load``),
so the same code path is benchmarked with and without Spark (``bench/predict_speed.py``).

Per micro-batch (``decode.batch_size`` in the bundle config, default 256) the featurizer turns the
rows into tensors (text tokens, decoded + resized covers, context ids; a missing or corrupt cover
becomes ``cover_present = False``), the model gives per-node probabilities ``[b, n_nodes]`` under
``torch.inference_mode``, and :class:`hierarchy.decode.Decoder` (per-level thresholds from
``decode.thresholds``) makes them a taxonomy-consistent label set. The output has exactly the
columns of :data:`models.schema.PREDICTION_SCHEMA`. Torch's thread count is left to the caller.
Images run channels-last (NHWC) on CPU and CUDA (``decode.channels_last: false`` turns it off);
on CUDA the forward pass runs under bf16 autocast (``decode.amp``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from models.schema import MAX_LEVELS, PREDICTION_SCHEMA

log = logging.getLogger(__name__)

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


class TaxonomyMismatchError(ValueError):
    """The bundle was trained on another taxonomy version than the one the caller expects."""


def resolve_device(device: str | None):
    """``None`` -> ``cuda`` when available else ``cpu``; accepts ``cpu``, ``cuda``, ``cuda:N``."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = str(device).strip().lower()
    if not _DEVICE_RE.match(dev):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or None, got {device!r}")
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here")
        if ":" in dev and int(dev.split(":")[1]) >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(dev)


def batch_to_device(batch: Mapping[str, Any], device, channels_last: bool = False) -> dict:
    """Move every tensor of a featurized batch to ``device`` (4-D float tensors channels-last if asked)."""
    import torch

    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def autocast_dtype(device, amp: Any):
    """The autocast dtype for ``amp`` ('bf16' | 'fp16' | True | False/None/'off') — CUDA only, else None."""
    import torch

    if getattr(device, "type", str(device)) != "cuda" or amp in (None, False, "off", "none", "fp32"):
        return None
    if amp in (True, "auto", "bf16", "bfloat16"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp in ("fp16", "float16"):
        return torch.float16
    raise ValueError(f"unknown amp setting {amp!r} (bf16, fp16 or off)")


def infer_proba(
    model,
    featurizer,
    frame: pd.DataFrame,
    *,
    batch_size: int = 256,
    device=None,
    amp: Any = None,
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-node probabilities for ``frame``: ``(prob [B, n_nodes] float32, cover_present [B] bool)``.

    ``model`` must be in eval mode; runs under ``torch.inference_mode`` in micro-batches.
    """
    import torch

    device = device if device is not None else next(model.parameters()).device
    dtype = autocast_dtype(torch.device(device), amp)
    probs, covers = [], []
    with torch.inference_mode():
        for start in range(0, len(frame), batch_size):
            chunk = frame.iloc[start : start + batch_size]
            batch = featurizer.transform(chunk)
            covers.append(batch["cover_present"].numpy().astype(bool))
            batch = batch_to_device(batch, device, channels_last)
            if dtype is not None:
                with torch.autocast(device_type="cuda", dtype=dtype):
                    p = model.predict_proba(batch)
            else:
                p = model.predict_proba(batch)
            probs.append(p.float().cpu().numpy())
    n_nodes = featurizer.taxonomy.n_nodes if hasattr(featurizer, "taxonomy") else None
    if not probs:
        return np.zeros((0, n_nodes or 0), np.float32), np.zeros(0, bool)
    return np.concatenate(probs).astype(np.float32, copy=False), np.concatenate(covers)


def decoder_for(taxonomy, config: Mapping[str, Any]):
    """A :class:`hierarchy.decode.Decoder` with the config's ``decode.thresholds`` (default 0.5),
    ``decode.max_candidates`` and ``decode.stop_threshold`` (None/absent: always a leaf)."""
    from hierarchy.decode import Decoder

    dec = dict(config.get("decode") or {})
    thr = dec.get("thresholds", 0.5)
    if isinstance(thr, Mapping):
        thr = {int(k): float(v) for k, v in thr.items()}
    else:
        thr = float(thr)
    kwargs = {}
    if dec.get("max_candidates") is not None:
        kwargs["max_candidates"] = int(dec["max_candidates"])
    stop = dec.get("stop_threshold")
    if stop is not None and stop != "auto":  # "auto": chosen on validation by training (models/train.py)
        kwargs["stop_threshold"] = float(stop)
    return Decoder(taxonomy, thr, **kwargs)


class _Columns:
    """Per-node lookups precomputed once per taxonomy: path ids/names and level-k names."""

    def __init__(self, taxonomy):
        t = taxonomy
        self.ids = np.array(t.ids, dtype=object)
        self.names = [n.name for n in t.nodes]
        self.levels = t.levels.astype(np.int32)
        self.path = [t.path(i) for i in t.ids]
        self.path_names = [t.path_names(i) for i in t.ids]
        self.level_names = [
            [p[k] if k < len(p) else None for p in self.path_names] for k in range(MAX_LEVELS)
        ]


class Predictor:
    """A loaded bundle. Build with :meth:`load`; call :meth:`predict` (pandas) or :meth:`predict_arrow`."""

    def __init__(self, config: Mapping[str, Any], taxonomy, featurizer, model, meta, device):
        self.config = dict(config)
        self.taxonomy = taxonomy
        self.featurizer = featurizer
        self.model = model
        self.meta = meta
        self.device = device
        dec = dict(self.config.get("decode") or {})
        self.batch_size = int(dec.get("batch_size") or self.config.get("batch_size") or 256)
        self.amp = dec.get("amp", "bf16")
        # NHWC images: faster depthwise convolutions on CUDA and on CPU (oneDNN) alike
        self.channels_last = bool(dec.get("channels_last", True)) and "image" in self.config.get("modalities", ())
        self.decoder = decoder_for(taxonomy, self.config)
        self._cols = _Columns(taxonomy)

    @property
    def model_version(self) -> str:
        return self.meta.model_version

    @property
    def taxonomy_version(self) -> str:
        return self.taxonomy.version

    @classmethod
    def load(
        cls,
        bundle: str | Path,
        device: str | None = None,
        expected_taxonomy_version: Any = None,
        allow_taxonomy_mismatch: bool = False,
    ) -> Predictor:
        """Load ``bundle`` on ``device`` ('cpu', 'cuda', 'cuda:N', None = auto).

        ``expected_taxonomy_version`` (a version string or a ``Taxonomy``): when given and different
        from the bundle's, raises :class:`TaxonomyMismatchError` unless ``allow_taxonomy_mismatch``
        (then the bundle's own taxonomy is used and a warning logged).
        """
        import torch

        from models.bundle import load_bundle, read_meta

        meta = read_meta(bundle)
        if expected_taxonomy_version is not None:
            expected = getattr(expected_taxonomy_version, "version", expected_taxonomy_version)
            if str(expected) != meta.taxonomy_version:
                msg = (
                    f"bundle {bundle} was trained on taxonomy {meta.taxonomy_label or '?'} version "
                    f"{meta.taxonomy_version}, but version {expected} is expected. Use a bundle trained "
                    f"on that taxonomy, or allow the mismatch explicitly (allow_taxonomy_mismatch=True) "
                    f"to tag with the bundle's taxonomy and re-tag later."
                )
                if not allow_taxonomy_mismatch:
                    raise TaxonomyMismatchError(msg)
                log.warning("%s (allowed)", msg)
        dev = resolve_device(device)
        config, taxonomy, featurizer, model, meta = load_bundle(bundle, device=str(dev))
        pred = cls(config, taxonomy, featurizer, model, meta, dev)
        if pred.channels_last:
            model.to(memory_format=torch.channels_last)
        return pred

    # ------------------------------------------------------------------ inference
    def predict_scores(self, frame: pd.DataFrame):
        """``(DecodedBatch, cover_present [B] bool)`` for ``frame`` (metrics use this)."""
        from hierarchy.decode import DecodedBatch

        prob, cover = infer_proba(
            self.model,
            self.featurizer,
            frame,
            batch_size=self.batch_size,
            device=self.device,
            amp=self.amp,
            channels_last=self.channels_last,
        )
        if len(prob) == 0:
            n = self.taxonomy.n_nodes
            return (
                DecodedBatch(
                    taxonomy=self.taxonomy,
                    consistent=np.zeros((0, n), np.float32),
                    leaf=np.zeros(0, np.int64),
                    leaf_score=np.zeros(0, np.float32),
                    path_logscore=np.zeros(0, np.float32),
                    labels=np.zeros((0, n), bool),
                ),
                cover,
            )
        return self.decoder.decode(prob), cover

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Tag ``frame`` (DUMP_SCHEMA columns; ``cover`` as bytes) -> PREDICTION_SCHEMA columns, same row order."""
        parts = []
        for start in range(0, len(frame), self.batch_size):
            chunk = frame.iloc[start : start + self.batch_size]
            decoded, cover = self.predict_scores(chunk)
            parts.append(self._columns(chunk, decoded, cover))
        if not parts:
            return PREDICTION_SCHEMA.empty_table().to_pandas()
        if len(parts) == 1:
            return parts[0]
        return pd.concat(parts, ignore_index=True)

    def predict_arrow(self, frame: pd.DataFrame) -> pa.Table:
        """:meth:`predict` as a pyarrow Table with exactly :data:`PREDICTION_SCHEMA`."""
        return to_arrow(self.predict(frame))

    def _columns(self, chunk: pd.DataFrame, decoded, cover_present: np.ndarray) -> pd.DataFrame:
        c = self._cols
        leaf = decoded.leaf
        labels = decoded.labels
        consistent = decoded.consistent
        tags = []
        for i in range(len(leaf)):
            nz = np.flatnonzero(labels[i])
            sc = consistent[i, nz]
            order = np.lexsort((-sc, c.levels[nz]))
            tags.append(
                [
                    {"node_id": c.ids[j], "name": c.names[j], "level": int(c.levels[j]), "score": float(s)}
                    for j, s in zip(nz[order], sc[order])
                ]
            )
        n = len(leaf)
        out = {
            "video_id": chunk["video_id"].astype(str).tolist(),
            "leaf_id": c.ids[leaf].tolist(),
            "path": [c.path[j] for j in leaf],
            "path_names": [c.path_names[j] for j in leaf],
        }
        for k in range(MAX_LEVELS):
            out[f"level{k + 1}"] = [c.level_names[k][j] for j in leaf]
        out["score"] = decoded.leaf_score.astype(np.float32)
        out["tags"] = tags
        out["cover_missing"] = ~np.asarray(cover_present, dtype=bool)
        out["taxonomy_version"] = [self.taxonomy.version] * n
        out["model_version"] = [self.meta.model_version] * n
        df = pd.DataFrame(out, columns=PREDICTION_SCHEMA.names)
        for name in ("video_id", "leaf_id", "taxonomy_version", "model_version") + tuple(
            f"level{k + 1}" for k in range(MAX_LEVELS)
        ):
            df[name] = df[name].astype(object)
        return df


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """A prediction frame -> pyarrow Table with exactly :data:`PREDICTION_SCHEMA` (Spark job helper)."""
    table = pa.Table.from_pandas(frame[PREDICTION_SCHEMA.names], schema=PREDICTION_SCHEMA, preserve_index=False)
    return table.replace_schema_metadata(PREDICTION_SCHEMA.metadata)
