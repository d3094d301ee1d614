"""``Predictor``: a model bundle behind one call, ``predict(pandas.DataFrame) -> pandas.DataFrame``.

This is the only thing the Spark tagging job calls (once per Python worker: ``Predictor.load``),
so the same code path is benchmarked with and without Spark (``bench/predict_speed.py``).

Per micro-batch (``decode.batch_size`` in the bundle config, default 256) the featurizer turns the
rows into tensors (text tokens, decoded + resized covers, context ids; a missing or corrupt cover
becomes ``cover_present = False``), the model gives per-node probabilities ``[b, n_nodes]`` under
``torch.inference_mode``, and :class:`vtag.hierarchy.decode.Decoder` (per-level thresholds from
``decode.thresholds``) makes them a taxonomy-consistent label set. The output has exactly the
columns of :data:`vtag.models.schema.PREDICTION_SCHEMA`. Torch's thread count is left to the caller.
Images run channels-last (NHWC) on CPU and CUDA (``decode.channels_last: false`` turns it off);
on CUDA the forward pass runs under bf16 autocast (``decode.amp``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from vtag.models.bundle import BundleTaxonomyMismatch
from vtag.models.pipeline import HostBatcher, autocast_dtype, cpu_count, iter_proba, legacy_infer_proba
from vtag.models.schema import MAX_LEVELS, PREDICTION_SCHEMA

__all__ = ["Predictor", "TaxonomyMismatchError", "autocast_dtype", "batch_to_device", "infer_proba",
           "resolve_device", "to_arrow", "decoder_for"]

log = logging.getLogger(__name__)

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


#: the old name of :class:`vtag.models.bundle.BundleTaxonomyMismatch` (the one exception of the check)
TaxonomyMismatchError = BundleTaxonomyMismatch


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
    """Move every tensor of a featurized batch to ``device``, non-blocking (training's call).

    Parameters
    ----------
    batch : mapping
        Featurized tensors.
    device : str or torch.device
        Target device.
    channels_last : bool
        4-D float tensors (``image [B, 3, H, W]``) NHWC; False leaves them as they are.
    """
    from vtag.models.featurize import to_device

    return to_device(batch, device, channels_last=True if channels_last else None, non_blocking=True)


def infer_proba(
    model,
    featurizer,
    frame: pd.DataFrame,
    *,
    batch_size: int = 256,
    device=None,
    amp: Any = None,
    channels_last: bool = False,
    prefetch: int = 2,
    output: str = "prob",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-node probabilities for ``frame``: ``(prob [B, n_nodes] float32, cover_present [B] bool)``.

    Parameters
    ----------
    model : vtag.models.factory.VtagModel
        Run in eval mode under ``torch.inference_mode`` (its mode is restored afterwards).
    featurizer : vtag.models.featurize.Featurizer
        Turns the rows into tensors (on a prefetch thread, :mod:`vtag.models.pipeline`).
    frame : pandas.DataFrame
        Dump rows.
    batch_size : int
        Rows per micro-batch.
    device : torch.device, optional
        Default: the model's device.
    amp : str or bool, optional
        Autocast on CUDA (``bf16`` / ``fp16`` / off).
    channels_last : bool
        NHWC images (the model's weights should match).
    prefetch : int
        Host batches prepared ahead of the model (0: inline).
    output : str
        The model output returned in place of ``prob`` (``"leaf_logits"``: a flat head's ``[B, L]``).
    """
    import torch

    device = torch.device(device) if device is not None else next(model.parameters()).device
    host = HostBatcher(featurizer, device, channels_last)
    was_training = model.training
    model.eval()
    probs, covers = [], []
    try:
        for _, p, c in iter_proba(model, frame, host, batch_size=batch_size, device=device, amp=amp,
                                  channels_last=True if channels_last else None, prefetch=prefetch,
                                  output=output):
            probs.append(p)
            covers.append(c)
    finally:
        model.train(was_training)
    if not probs:
        return np.zeros((0, featurizer.taxonomy.n_nodes), np.float32), np.zeros(0, bool)
    return np.concatenate(probs).astype(np.float32, copy=False), np.concatenate(covers)


def decoder_for(taxonomy, config: Mapping[str, Any]):
    """A :class:`vtag.hierarchy.decode.Decoder` with the config's ``decode.thresholds`` (default 0.5),
    ``decode.max_candidates``, ``decode.stop_threshold`` (None/absent: always a leaf) and
    ``decode.primary`` (absent or ``auto`` not yet resolved by training: ``path``) and
    ``decode.label_nodes`` (node ids the primary node may be; absent: any)."""
    from vtag.hierarchy.decode import Decoder

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
    primary = dec.get("primary")
    if primary is not None and primary != "auto":
        kwargs["primary"] = str(primary)
    if dec.get("label_nodes"):
        unknown = [i for i in dec["label_nodes"] if str(i) not in taxonomy.index]
        if unknown:
            raise ValueError(f"decode.label_nodes: {len(unknown)} ids not in the taxonomy, e.g. {unknown[0]!r}")
        kwargs["label_nodes"] = [taxonomy.index[str(i)] for i in dec["label_nodes"]]
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
    """A loaded bundle. Build with :meth:`load`; call :meth:`predict` (pandas) or :meth:`predict_arrow`.

    Inference settings, from the bundle config's ``decode`` section (docs/model.md), each also an
    attribute that may be changed after loading: ``batch_size`` (rows per micro-batch, default 256),
    ``amp`` (CUDA autocast, default ``bf16``), ``channels_last`` (default true), ``prefetch`` (host
    batches prepared ahead on a background thread, default 2; 0 = inline), ``decode_threads``
    (cover decode threads; default 0 = torch's thread count, i.e. the task's CPUs, at most 8), ``gpu_decode`` (``auto``: JPEG
    covers decoded on the GPU when the model runs on CUDA), ``compile`` (``torch.compile`` the image
    backbone on CUDA, falling back to eager; default false), ``fold_bn`` (an inference copy of the
    image backbone with its BatchNorms folded into the convolutions, default true; same outputs to
    float rounding). :meth:`use_legacy_path` switches to the path before issue 20 (benches compare
    the two in one run).
    """

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
        self.prefetch = int(dec.get("prefetch", 2))
        self.decode_threads = int(dec.get("decode_threads") or 0)  # 0: torch's threads (the task's CPUs), at most 8
        self.gpu_decode = dec.get("gpu_decode", "auto")
        self.compile = dec.get("compile", False)
        self.fold_bn = bool(dec.get("fold_bn", True))
        self.legacy = False
        self.decoder = decoder_for(taxonomy, self.config)
        self._cols = _Columns(taxonomy)
        self._pool = self._prefetch_ex = self._gpu_decoder = None

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

        from vtag.models.bundle import check_bundle_taxonomy, load_bundle

        check_bundle_taxonomy(bundle, expected_taxonomy_version, allow=allow_taxonomy_mismatch,
                              hint="or allow the mismatch explicitly (allow_taxonomy_mismatch=True) to tag with "
                              "the bundle's taxonomy and re-tag later")
        dev = resolve_device(device)
        config, taxonomy, featurizer, model, meta = load_bundle(bundle, device=str(dev))
        pred = cls(config, taxonomy, featurizer, model, meta, dev)
        model.eval()
        if pred.channels_last:
            model.to(memory_format=torch.channels_last)
        if "image" in model.encoders and pred.fold_bn:
            n = model.encoders["image"].prepare_inference(pred._example_images())
            log.debug("image backbone: %d BatchNorm layers folded for inference", n)
        if pred.compile and dev.type == "cuda" and "image" in model.encoders:
            pred.compile_backbone()
        return pred

    def _example_images(self):
        """``[2, 3, H, W]`` random images on the device, in the model's layout."""
        import torch

        h, w = self.featurizer.image.size
        example = torch.randn((2, 3, h, w), generator=torch.Generator().manual_seed(0)).to(self.device)
        return example.contiguous(memory_format=torch.channels_last) if self.channels_last else example

    # ------------------------------------------------------------------ settings
    def use_legacy_path(self, legacy: bool = True) -> None:
        """Switch to (or back from) the path before issue 20: featurize, move and run one batch
        after the other on the calling thread, covers decoded on the CPU one by one, the image
        backbone on every row (blank images for rows without a cover).

        Parameters
        ----------
        legacy : bool
            True: the old path; False: back to the new one.
        """
        self.legacy = bool(legacy)

    def compile_backbone(self) -> bool:
        """``torch.compile`` the image backbone (``decode.compile``; ``true`` or a mode name such as
        ``max-autotune``); on any failure it stays eager (logged). Returns whether compiled."""
        import torch

        enc = self.model.encoders["image"]
        example = self._example_images()
        kwargs = {"mode": self.compile} if isinstance(self.compile, str) else {}
        dtype = autocast_dtype(self.device, self.amp)
        if dtype is None:
            return enc.compile_backbone(example, **kwargs)
        with torch.autocast(device_type="cuda", dtype=dtype):
            return enc.compile_backbone(example, **kwargs)

    def _host_batcher(self) -> HostBatcher:
        import concurrent.futures as cf

        import torch

        threads = self.decode_threads or min(torch.get_num_threads(), cpu_count(), 8)
        if self._pool is None and threads > 1 and self.featurizer.image is not None:
            self._pool = cf.ThreadPoolExecutor(threads, thread_name_prefix="vtag-decode")
        if self._prefetch_ex is None and self.prefetch > 0:
            self._prefetch_ex = cf.ThreadPoolExecutor(1, thread_name_prefix="vtag-prefetch")
        gpu = None
        if self.featurizer.image is not None and self.gpu_decode not in (False, "off", None):
            from vtag.models.image_gpu import GpuCoverDecoder, gpu_decode_available

            if gpu_decode_available(self.device):
                if self._gpu_decoder is None or self._gpu_decoder.channels_last != self.channels_last:
                    self._gpu_decoder = GpuCoverDecoder(self.featurizer.image, self.device, self.channels_last)
                gpu = self._gpu_decoder
            elif self.gpu_decode not in ("auto", True) or self.device.type == "cuda":
                log.debug("gpu_decode=%r: no GPU JPEG decoder for %s, covers decoded on the CPU",
                          self.gpu_decode, self.device)
        return HostBatcher(self.featurizer, self.device, self.channels_last, pool=self._pool, gpu_decoder=gpu)

    def _skip_absent(self, on: bool) -> None:
        enc = self.model.encoders["image"] if "image" in self.model.encoders else None
        if enc is not None:
            enc.skip_absent, enc.use_inference_backbone = on, True

    def iter_scores(self, frame: pd.DataFrame):
        """Yield ``(chunk, prob [b, n_nodes] float32, cover_present [b] bool)`` per micro-batch, in
        order (the pipelined path of :mod:`vtag.models.pipeline`; the legacy path when switched on).

        Parameters
        ----------
        frame : pandas.DataFrame
            Dump rows.
        """
        if self.legacy:
            for start in range(0, len(frame), self.batch_size):
                chunk = frame.iloc[start : start + self.batch_size]
                prob, cover = legacy_infer_proba(self.model, self.featurizer, chunk, batch_size=self.batch_size,
                                                 device=self.device, amp=self.amp,
                                                 channels_last=self.channels_last)
                yield chunk, prob, cover
            return
        self.model.eval()
        self._skip_absent(bool(self.model.config["image"].get("skip_absent", True))
                          if "image" in self.model.encoders else False)
        yield from iter_proba(self.model, frame, self._host_batcher(), batch_size=self.batch_size,
                              device=self.device, amp=self.amp,
                              channels_last=True if self.channels_last else None,
                              prefetch=self.prefetch, executor=self._prefetch_ex)

    # ------------------------------------------------------------------ inference
    def predict_scores(self, frame: pd.DataFrame):
        """``(DecodedBatch, cover_present [B] bool)`` for ``frame`` (metrics use this).

        Parameters
        ----------
        frame : pandas.DataFrame
            Dump rows.
        """
        prob, cover = self.predict_proba(frame)
        return self.decoder.decode(prob), cover  # no rows: a [0, N] batch decodes to an empty DecodedBatch

    def predict_proba(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(prob [B, n_nodes] float32, cover_present [B] bool)`` for ``frame``, before decoding.

        Parameters
        ----------
        frame : pandas.DataFrame
            Dump rows.
        """
        probs, covers = [], []
        for _, p, c in self.iter_scores(frame):
            probs.append(p)
            covers.append(c)
        if not probs:
            return np.zeros((0, self.taxonomy.n_nodes), np.float32), np.zeros(0, bool)
        return np.concatenate(probs), np.concatenate(covers)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Tag ``frame`` (DUMP_SCHEMA columns; ``cover`` as bytes) -> PREDICTION_SCHEMA columns, same row order.

        Parameters
        ----------
        frame : pandas.DataFrame
            Dump rows; every column but ``video_id`` optional.
        """
        parts = [self._columns(chunk, self.decoder.decode(prob), cover)
                 for chunk, prob, cover in self.iter_scores(frame)]
        if not parts:
            return PREDICTION_SCHEMA.empty_table().to_pandas()
        if len(parts) == 1:
            return parts[0]
        return pd.concat(parts, ignore_index=True)

    def predict_iter(self, frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """:meth:`predict` over a stream of frames (``mapInPandas``' iterator of Arrow batches), one
        output frame per input frame, in order; the prefetch runs across frame boundaries, so the
        model never waits for the first micro-batch of the next frame.

        Parameters
        ----------
        frames : iterable of pandas.DataFrame
            Dump rows, e.g. the Arrow batches of one Spark task.
        """
        if self.legacy:
            for frame in frames:
                yield self.predict(frame)
            return
        empty = PREDICTION_SCHEMA.empty_table().to_pandas

        def cut():
            for i, frame in enumerate(frames):
                n = len(frame)
                if n == 0:
                    yield (i, True, True), frame
                for start in range(0, n, self.batch_size):
                    yield (i, start + self.batch_size >= n, False), frame.iloc[start : start + self.batch_size]

        self.model.eval()
        self._skip_absent(bool(self.model.config["image"].get("skip_absent", True))
                          if "image" in self.model.encoders else False)
        parts: list[pd.DataFrame] = []
        for ((_, last, is_empty), chunk), prob, cover in iter_proba(
                self.model, cut(), self._host_batcher(), batch_size=self.batch_size, device=self.device,
                amp=self.amp, channels_last=True if self.channels_last else None, prefetch=self.prefetch,
                executor=self._prefetch_ex):
            if not is_empty:
                parts.append(self._columns(chunk, self.decoder.decode(prob), cover))
            if last:
                yield (parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)) if parts else empty()
                parts = []

    def predict_arrow(self, frame: pd.DataFrame) -> pa.Table:
        """:meth:`predict` as a pyarrow Table with exactly :data:`PREDICTION_SCHEMA`."""
        return to_arrow(self.predict(frame))

    def close(self) -> None:
        """Stop the decode and prefetch threads (they are also stopped at interpreter exit)."""
        for ex in (self._pool, self._prefetch_ex):
            if ex is not None:
                ex.shutdown(wait=True)
        self._pool = self._prefetch_ex = None

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
