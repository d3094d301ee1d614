"""Covers decoded where the model runs: batched JPEG decode on the GPU (nvJPEG through
``torchvision.io.decode_jpeg(device="cuda")``), resize + centre crop + normalisation there too.

The geometry is the eval transform's (:class:`vtag.models.image.CoverPreprocessor`: timm's ``Resize``
of the shorter side with antialias, ``CenterCrop``, ``Normalize``), applied with the same
torchvision transforms to ``uint8 [N, 3, h, w]`` tensors, one call per distinct cover size. Rows
the GPU does not take — PNG, WebP, GIF, CMYK JPEGs, bytes without a JPEG header or end marker,
anything ``decode_jpeg`` refuses — go through the CPU path of the preprocessor one by one, so a
corrupt cover is still a missing modality (``cover_present`` False, zero image), never a failed
batch. The class runs on any device (on the CPU the decode is libjpeg-turbo through torchvision),
which is how its logic is tested where there is no GPU.

Pixels differ slightly from the CPU path's (another IDCT, no draft-mode DCT downscale, torch's
antialiased resize instead of PIL's): the bench (``bench/predict_speed.py --compare``) reports the
effect on labels and scores.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from vtag.models.image import MAX_COVER_PIXELS, CoverPreprocessor, cover_bytes

log = logging.getLogger(__name__)

_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"


def gpu_decode_available(device: Any) -> bool:
    """True when ``device`` is CUDA and this torchvision can decode JPEGs there.

    Parameters
    ----------
    device : str or torch.device
        Where the model runs.
    """
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def jpeg_for_gpu(data: bytes | None) -> bool:
    """Whether a cover goes to the batched JPEG decoder: a baseline/progressive JPEG (SOI marker,
    ends with EOI, so not truncated), in RGB or grayscale (not CMYK), within the pixel limit. Reads
    the header only.

    Parameters
    ----------
    data : bytes or None
        One cover's bytes.
    """
    if not data or not data.startswith(_JPEG_SOI) or not data.rstrip(b"\x00").endswith(_JPEG_EOI):
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            return img.format == "JPEG" and img.mode in ("RGB", "L") and 0 < w * h <= MAX_COVER_PIXELS
    except Exception:  # noqa: BLE001
        return False


class GpuCoverDecoder:
    """Cover bytes -> ``image [B, 3, H, W]`` float32 normalized on ``device`` + ``cover_present [B]``.

    Parameters
    ----------
    pre : CoverPreprocessor
        The featurizer's preprocessor: its eval geometry, normalisation and CPU fallback.
    device : str or torch.device
        Where the decode, resize and normalisation run (``cuda`` in production).
    channels_last : bool
        Return the images NHWC in memory.
    """

    def __init__(self, pre: CoverPreprocessor, device: Any, channels_last: bool = True):
        self.pre = pre
        self.device = torch.device(device)
        self.channels_last = bool(channels_last)
        self.size = tuple(pre.size)
        split = pre._eval
        self.usable = bool(split.vectorized)
        if self.usable:
            self.geometry = split.pil  # torchvision Resize + CenterCrop: tensors as well as PIL images
            self.mean = [m.to(self.device) for m in split.mean]
            self.std = [s.to(self.device) for s in split.std]
        self.stats = {"gpu": 0, "cpu": 0, "missing": 0}

    def __call__(self, covers: Sequence, pool=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``covers`` (one cell per row) -> ``(image [B, 3, H, W] on device, cover_present [B] bool CPU)``.

        Parameters
        ----------
        covers : sequence
            Bytes / None / anything (missing) per row.
        pool : concurrent.futures.Executor, optional
            Threads for the rows decoded on the CPU.
        """
        cells = [cover_bytes(c) for c in covers]
        b = len(cells)
        h, w = self.size
        u8 = torch.zeros((b, 3, h, w), dtype=torch.uint8, device=self.device)
        ok = np.zeros(b, dtype=bool)
        if not self.usable:
            x, present = self.pre(cells, pool=pool, channels_last=self.channels_last)
            return x.to(self.device, non_blocking=True), present
        gpu_rows = [i for i, c in enumerate(cells) if jpeg_for_gpu(c)]
        decoded = self._decode_jpegs([cells[i] for i in gpu_rows])
        on_gpu = set(gpu_rows)
        cpu_rows = [i for i, c in enumerate(cells) if c is not None and i not in on_gpu]
        groups: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = defaultdict(list)
        for i, img in zip(gpu_rows, decoded):
            if img is None:
                cpu_rows.append(i)  # refused by the decoder: the CPU path decides
            else:
                groups[(int(img.shape[1]), int(img.shape[2]))].append((i, img))
        for items in groups.values():
            rows = torch.as_tensor([i for i, _ in items], device=self.device)
            batch = torch.stack([img for _, img in items])  # [n, 3, h0, w0] uint8
            u8.index_copy_(0, rows, self.geometry(batch))
            ok[[i for i, _ in items]] = True
        self.stats["gpu"] += sum(len(v) for v in groups.values())
        if cpu_rows:
            cpu_rows.sort()
            arrays = list(pool.map(self.pre.cover_array, [cells[i] for i in cpu_rows])) if pool is not None \
                else [self.pre.cover_array(cells[i]) for i in cpu_rows]
            for i, a in zip(cpu_rows, arrays):
                if a is not None:
                    u8[i] = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).to(self.device)
                    ok[i] = True
                    self.stats["cpu"] += 1
        self.stats["missing"] += int(b - ok.sum())
        x = u8.float().div_(255.0)  # the CPU path's arithmetic, on the device
        for mean, std in zip(self.mean, self.std):
            x = x.sub_(mean).div_(std)
        present = torch.from_numpy(ok)
        if not ok.all():
            x[~present.to(self.device)] = 0.0
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, present

    def _decode_jpegs(self, blobs: list[bytes]) -> list[torch.Tensor | None]:
        """``uint8 [3, h, w]`` per blob on the device, None where the decoder refuses it. One batched
        call; when it fails, one call per blob (so one bad file costs only itself)."""
        if not blobs:
            return []
        with warnings.catch_warnings():  # torchvision 0.29 points to torchcodec; nvJPEG through it still works
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg

        data = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
        try:
            out = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
            return [o if o.dim() == 3 and o.shape[0] == 3 else None for o in out]
        except Exception as e:  # noqa: BLE001
            log.debug("batched JPEG decode failed (%s); decoding one by one", e)
        res: list[torch.Tensor | None] = []
        for d in data:
            try:
                o = decode_jpeg(d, mode=ImageReadMode.RGB, device=self.device)
                res.append(o if o.dim() == 3 and o.shape[0] == 3 else None)
            except Exception:  # noqa: BLE001 - this cover goes to the CPU path
                res.append(None)
        return res
