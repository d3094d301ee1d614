"""The inference loop behind :class:`vtag.models.predictor.Predictor` and validation: micro-batches of
rows -> per-node probabilities, with the CPU work of batch k+1 overlapping the model on batch k.

Per micro-batch ``b`` rows:

1. *host batch* (a prefetch thread, :class:`Prefetcher`, at most ``prefetch`` batches ahead): text
   featurization (jieba, hashed n-grams), context ids, profiles, and the covers — decoded and
   resized on a small thread pool on the CPU (``image [b, 3, H, W]`` float32, NHWC when the model
   runs channels-last), or on CUDA decoded on the GPU (:class:`vtag.models.image_gpu.GpuCoverDecoder`:
   ``image`` is then already on the device). On CUDA the host tensors are pinned.
2. *device* (the calling thread): one transfer (:func:`vtag.models.featurize.to_device`, non-blocking),
   the forward pass under ``torch.inference_mode`` and the autocast dtype, ``prob [b, N]`` copied
   back asynchronously; the caller's work on batch k (consistent decoding, output columns) runs
   while the GPU computes batch k+1.

``prefetch=0`` runs everything in the calling thread, in order (same results).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import os
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd


def cpu_count() -> int:
    """CPUs this process may run on (the Spark task's cores under a cgroup/affinity mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def autocast_dtype(device, amp: Any):
    """The autocast dtype for ``amp`` — CUDA only, else None.

    Parameters
    ----------
    device : torch.device or str
        Where the model runs.
    amp : str or bool or None
        ``bf16`` / ``auto`` / True (bf16 where supported, else fp16), ``fp16``, or off (False, None, ``off``).
    """
    import torch

    if getattr(device, "type", str(device)) != "cuda" or amp in (None, False, "off", "none", "fp32"):
        return None
    if amp in (True, "auto", "bf16", "bfloat16"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp in ("fp16", "float16"):
        return torch.float16
    raise ValueError(f"unknown amp setting {amp!r} (bf16, fp16 or off)")


class Prefetcher:
    """Runs ``fn(item)`` for the items of an iterable on one background thread, at most ``depth``
    items ahead of the consumer; yields ``(item, result)`` in order. ``depth=0``: inline.

    Parameters
    ----------
    fn : callable
        The work per item (exceptions are raised in the consumer, at that item).
    items : iterable
        The inputs, consumed lazily.
    depth : int
        Bounded queue: how many results may wait ahead of the consumer.
    executor : concurrent.futures.ThreadPoolExecutor, optional
        A single-worker executor to reuse (the Predictor keeps one); default: a new one per run.
    """

    def __init__(self, fn: Callable, items: Iterable, depth: int = 2, executor: cf.Executor | None = None):
        self.fn, self.items, self.depth = fn, items, max(0, int(depth))
        self.executor = executor

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        if self.depth == 0:
            for item in self.items:
                yield item, self.fn(item)
            return
        own = self.executor is None
        ex = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vtag-prefetch") if own else self.executor
        queue: collections.deque = collections.deque()
        it = iter(self.items)
        try:
            for item in it:
                queue.append((item, ex.submit(self.fn, item)))
                if len(queue) > self.depth:
                    done, fut = queue.popleft()
                    yield done, fut.result()
            while queue:
                done, fut = queue.popleft()
                yield done, fut.result()
        finally:
            for _, fut in queue:
                fut.cancel()
            if own:
                ex.shutdown(wait=True, cancel_futures=True)


def chunks(frame: pd.DataFrame, batch_size: int) -> Iterator[pd.DataFrame]:
    """``frame`` in consecutive row slices of at most ``batch_size``.

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows to cut.
    batch_size : int
        Rows per slice.
    """
    for start in range(0, len(frame), int(batch_size)):
        yield frame.iloc[start : start + int(batch_size)]


class HostBatcher:
    """The host side of one micro-batch: ``chunk -> batch dict`` (CPU tensors, pinned on CUDA; with a
    GPU decoder ``image`` is on the device already).

    Parameters
    ----------
    featurizer : vtag.models.featurize.Featurizer
        The bundle's featurizer.
    device : torch.device
        Where the model runs.
    channels_last : bool
        NHWC images.
    pool : concurrent.futures.Executor, optional
        Threads for the CPU cover decode.
    gpu_decoder : vtag.models.image_gpu.GpuCoverDecoder, optional
        Decode JPEG covers on the device.
    """

    def __init__(self, featurizer, device, channels_last: bool, pool=None, gpu_decoder=None):
        self.featurizer, self.device, self.channels_last = featurizer, device, channels_last
        self.pool, self.gpu_decoder = pool, gpu_decoder
        self.cuda = getattr(device, "type", str(device)) == "cuda"

    def __call__(self, chunk: pd.DataFrame) -> dict:
        import torch

        from vtag.models.featurize import _column, pin_batch

        with torch.inference_mode():
            gpu = self.gpu_decoder is not None
            batch = self.featurizer.transform(chunk, pool=self.pool, channels_last=self.channels_last,
                                              decode_covers=not gpu)
            if self.cuda:
                batch = pin_batch(batch)
            if gpu:
                batch["image"], batch["cover_present"] = self.gpu_decoder(_column(chunk, "cover"), pool=self.pool)
        return batch


def iter_proba(model, frame: pd.DataFrame | Iterable, host: Callable[[pd.DataFrame], Mapping], *, batch_size: int = 256,
               device=None, amp: Any = None, channels_last: bool | None = None, prefetch: int = 2,
               executor: cf.Executor | None = None, output: str = "prob"
               ) -> Iterator[tuple[pd.DataFrame, np.ndarray, np.ndarray]]:
    """Yield ``(chunk, prob [b, N] float32, cover_present [b] bool)`` per micro-batch, in row order.

    Parameters
    ----------
    model : vtag.models.factory.VtagModel
        In eval mode, on ``device``.
    frame : pandas.DataFrame or iterable
        Dump rows (cut into ``batch_size`` chunks), or an iterable of ``(key, chunk)`` pairs already
        cut (:meth:`vtag.models.predictor.Predictor.predict_iter`); the pair is then yielded in place of
        the chunk; an empty chunk is yielded with ``None`` for prob and cover_present.
    host : callable
        ``chunk -> batch`` (a :class:`HostBatcher`), run on the prefetch thread.
    batch_size : int
        Rows per micro-batch.
    device : torch.device, optional
        Default: the model's.
    amp : str or bool, optional
        Autocast setting (:func:`autocast_dtype`; CUDA only).
    channels_last : bool or None
        Layout of the image on the device (None: as the host batch has it).
    prefetch : int
        Host batches prepared ahead (0: none, all inline).
    executor : concurrent.futures.ThreadPoolExecutor, optional
        The single prefetch worker to reuse.
    output : str
        The model output yielded in place of ``prob`` (``"leaf_logits"``: a flat head's ``[b, L]``).
    """
    import torch

    from vtag.models.featurize import to_device

    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = autocast_dtype(device, amp)
    cuda = device.type == "cuda"
    pending = None
    with torch.inference_mode():
        if isinstance(frame, pd.DataFrame):
            items, work = chunks(frame, batch_size), host
        else:
            items, work = frame, (lambda pair: host(pair[1]) if len(pair[1]) else None)
        for chunk, batch in Prefetcher(work, items, prefetch, executor):
            if batch is None:  # an empty chunk: nothing to run, order kept
                if pending is not None:
                    yield _finish(pending)
                    pending = None
                yield chunk, None, None
                continue
            cover = batch["cover_present"].cpu().numpy().astype(bool)
            dev = to_device(batch, device, channels_last=channels_last, non_blocking=True)
            ctx = torch.autocast(device_type="cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
            with ctx:
                prob = model(dev)[output].float()
            if cuda:  # copy back asynchronously; finish batch k-1 while the GPU runs batch k
                out = torch.empty(prob.shape, dtype=prob.dtype, pin_memory=True)
                out.copy_(prob, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                if pending is not None:
                    yield _finish(pending)
                pending = (chunk, out, event, cover)
            else:
                yield chunk, prob.numpy(), cover
        if pending is not None:
            yield _finish(pending)


def _finish(pending) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    chunk, out, event, cover = pending
    event.synchronize()
    return chunk, out.numpy(), cover


def legacy_infer_proba(model, featurizer, frame: pd.DataFrame, *, batch_size: int = 256, device=None,
                       amp: Any = None, channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The path before issue 20, kept for before/after benches: featurize, move, run, one batch after
    the other in the calling thread, covers decoded on one thread, no token cache and the jieba
    tokenizer looked up per row, the image backbone (unfolded) on every row (``skip_absent`` off for the call). Returns ``(prob [B, N] float32, cover_present [B] bool)``.

    Parameters
    ----------
    model, featurizer, frame
        As :func:`iter_proba` (the featurizer transforms in the calling thread).
    batch_size, device, amp
        As :func:`iter_proba`.
    channels_last : bool
        NHWC images on the device.
    """
    import torch

    from vtag.models.featurize import to_device

    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = autocast_dtype(device, amp)
    enc = model.encoders["image"] if "image" in getattr(model, "encoders", {}) else None
    from vtag.models.text import TextFeaturizer

    before = (enc.skip_absent, enc.use_inference_backbone) if enc is not None else None
    if enc is not None:
        enc.skip_absent, enc.use_inference_backbone = False, False
    cache_size, TextFeaturizer.TOKEN_CACHE_SIZE = TextFeaturizer.TOKEN_CACHE_SIZE, 0
    TextFeaturizer.LOOKUP_ONCE = False
    probs, covers = [], []
    try:
        with torch.inference_mode():
            for chunk in chunks(frame, batch_size):
                batch = featurizer.transform(chunk)
                covers.append(batch["cover_present"].numpy().astype(bool))
                batch = to_device(batch, device, channels_last=channels_last or None, non_blocking=True)
                if dtype is not None:
                    with torch.autocast(device_type="cuda", dtype=dtype):
                        p = model.predict_proba(batch)
                else:
                    p = model.predict_proba(batch)
                probs.append(p.float().cpu().numpy())
    finally:
        TextFeaturizer.TOKEN_CACHE_SIZE, TextFeaturizer.LOOKUP_ONCE = cache_size, True
        if enc is not None:
            enc.skip_absent, enc.use_inference_backbone = before
    if not probs:
        return np.zeros((0, featurizer.taxonomy.n_nodes), np.float32), np.zeros(0, bool)
    return np.concatenate(probs).astype(np.float32, copy=False), np.concatenate(covers)
