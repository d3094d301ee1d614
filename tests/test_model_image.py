"""Covers: decoding never raises, preprocessing from timm's data config, the backbone encoder."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vtag.models.factory import resolve_config
from vtag.models.image import (
    CoverPreprocessor,
    ImageEncoder,
    cover_bytes,
    decode_cover,
    resolve_image_data_config,
)

CFG = resolve_config({"image": {"backbone": "test_efficientnet", "input_size": 48, "proj_dim": 5}})["image"]



def encode(fmt: str, size=(64, 36), mode="RGB") -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (size[1], size[0], len(mode)), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr if len(mode) > 1 else arr[..., 0], mode).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    "data",
    [None, b"", b"garbage", encode("JPEG")[:40], encode("PNG")[:-60], float("nan"), "not bytes", 3],
)
def test_bad_covers_are_missing(data):
    assert decode_cover(cover_bytes(data), 64) is None


def test_good_covers_decode():
    for fmt, mode in [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("WEBP", "RGB")]:
        img = decode_cover(encode(fmt, mode=mode), 32)
        assert img is not None and img.mode == "RGB"
    assert decode_cover(cover_bytes(bytearray(encode("JPEG")))) is not None


def test_preprocessor_uses_timm_data_config():
    dc = resolve_image_data_config(resolve_config({"image": {"backbone": "legacy_xception", "input_size": 299}})["image"])
    assert dc["input_size"] == (3, 299, 299) and tuple(dc["mean"]) == (0.5, 0.5, 0.5)
    pre = CoverPreprocessor(CFG)
    img, present = pre([encode("JPEG"), b"bad", None, encode("PNG", (20, 90))])
    assert img.shape == (4, 3, 48, 48) and present.tolist() == [True, False, False, True]
    assert (img[1:3] == 0).all() and torch.isfinite(img).all()
    img2, _ = pre([encode("JPEG")])
    assert torch.equal(img2[0], img[0])  # eval transform is deterministic
    aug, present = pre([encode("JPEG"), None], train=True)
    assert aug.shape == (2, 3, 48, 48) and present.tolist() == [True, False]


def test_encoder_and_freeze():
    torch.manual_seed(0)
    enc = ImageEncoder(CFG)
    x = torch.randn(2, 3, 48, 48)
    out = enc({"image": x})
    assert out.shape == (2, 5) and enc.out_dim == 5
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    frozen = ImageEncoder({**CFG, "freeze": True})
    frozen.train()
    assert not frozen.backbone.training and frozen.proj.training
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    frozen({"image": x}).sum().backward()
    assert all(p.grad is not None for p in frozen.proj.parameters())


def test_weights_file_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError):
        ImageEncoder({**CFG, "weights_file": str(tmp_path / "nope.safetensors")})
    with pytest.warns(UserWarning, match="weights_file"):
        ImageEncoder({**CFG, "expect_weights": True})
    ImageEncoder({**CFG, "weights_file": str(tmp_path / "nope"), "expect_weights": True}, pretrained=False)


def test_timm_weights_file_roundtrip(tmp_path):
    """A timm state dict saved as safetensors loads through pretrained_cfg_overlay (no network)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = timm.create_model("test_efficientnet", pretrained=False, num_classes=10)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    enc = ImageEncoder({**CFG, "weights_file": str(path)})
    assert torch.equal(enc.backbone.conv_stem.weight, src.conv_stem.weight)
