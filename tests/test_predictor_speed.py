"""Issue 20: the image backbone only on rows with a cover, the pipelined Predictor (prefetch, decode
threads, one device transfer), the GPU cover decoder's logic (run on the CPU here) and, on CUDA
only (marker ``gpu``), the GPU path against the CPU one."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.builders import tiny_bundle
from vtag.models.factory import resolve_config
from vtag.models.featurize import to_device
from vtag.models.image import CoverPreprocessor, ImageEncoder
from vtag.models.image_gpu import GpuCoverDecoder, jpeg_for_gpu
from vtag.models.pipeline import Prefetcher
from vtag.models.predictor import Predictor

CUDA = torch.cuda.is_available()


def _png(w=40, h=24) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _mixed(frame, n=24):
    """``n`` rows: real JPEG covers, missing, corrupt, truncated and PNG ones."""
    rows = frame.iloc[:n].copy().reset_index(drop=True)
    covers = rows["cover"].tolist()
    for i in range(0, n, 4):
        covers[i] = None
    covers[1] = b"\xff\xd8\xff\xe0 not a jpeg"
    covers[2] = covers[2][: len(covers[2]) // 3]
    covers[3] = _png()
    rows["cover"] = covers
    return rows


@pytest.fixture(scope="module")
def bundle():
    out, tax, frame, _ = tiny_bundle()
    return out, tax, frame


@pytest.fixture()
def predictor(bundle):
    pred = Predictor.load(bundle[0], device="cpu")
    yield pred
    pred.close()


def _backbones(model):
    """The unfolded backbone and, when prepared, the folded inference copy."""
    enc = model.encoders["image"]
    return [m for m in (enc.backbone, enc._inference) if m is not None]


def _backbone_rows(model) -> list[int]:
    seen: list[int] = []
    for m in _backbones(model):
        m.register_forward_pre_hook(lambda m, args: seen.append(int(args[0].shape[0])))
    return seen


# ---------------------------------------------------------------- no work for absent covers
def test_skip_absent_gives_the_same_probabilities_on_a_mixed_batch(predictor, bundle):
    rows = _mixed(bundle[2])
    seen = _backbone_rows(predictor.model)
    batch = predictor.featurizer.transform(rows)
    present = batch["cover_present"]
    assert 0 < int(present.sum()) < len(rows)
    enc = predictor.model.encoders["image"]
    enc.skip_absent = False
    full = predictor.model.predict_proba(batch)
    enc.skip_absent = True
    fast = predictor.model.predict_proba(batch)
    assert seen == [len(rows), int(present.sum())]  # the shortcut ran the backbone on the covers only
    np.testing.assert_allclose(fast.numpy(), full.numpy(), rtol=0, atol=1e-5)
    assert not torch.equal(full, predictor.model.predict_proba({**batch, "image": batch["image"] * 0 + 1}))


def test_a_batch_without_covers_skips_the_backbone(predictor, bundle):
    rows = bundle[2].iloc[:10].copy()
    rows["cover"] = None
    seen = _backbone_rows(predictor.model)
    new = predictor.predict(rows)
    assert seen == []
    predictor.use_legacy_path()
    old = predictor.predict(rows)
    assert seen == [10]
    assert new["leaf_id"].tolist() == old["leaf_id"].tolist()
    np.testing.assert_allclose(new["score"], old["score"], atol=1e-6)
    assert new["cover_missing"].all()


def test_new_path_matches_the_legacy_path(predictor, bundle):
    rows = _mixed(bundle[2], n=len(bundle[2]))
    predictor.batch_size = 7  # several micro-batches, some without a cover
    new = predictor.predict(rows)
    predictor.prefetch = 0
    inline = predictor.predict(rows)
    predictor.use_legacy_path()
    old = predictor.predict(rows)
    assert new["video_id"].tolist() == rows["video_id"].tolist()
    assert (new["leaf_id"] == old["leaf_id"]).mean() >= 0.999
    np.testing.assert_allclose(new["score"], old["score"], atol=1e-5)
    assert new["cover_missing"].tolist() == old["cover_missing"].tolist()
    assert new["leaf_id"].tolist() == inline["leaf_id"].tolist()
    np.testing.assert_array_equal(new["score"], inline["score"])


def test_train_mode_batchnorm_sees_real_covers_only():
    """The choice for training: BatchNorm's batch statistics come from the rows with a cover."""
    cfg = resolve_config({"image": {"backbone": "test_efficientnet", "input_size": 32, "proj_dim": 4}})["image"]
    torch.manual_seed(0)
    x = torch.randn(6, 3, 32, 32)
    present = torch.tensor([True, False, True, True, False, True])
    x[~present] = 0.0
    a, b = ImageEncoder(cfg, pretrained=False), ImageEncoder(cfg, pretrained=False)
    b.load_state_dict(a.state_dict())
    a.train()
    b.train()
    a.drop.p = b.drop.p = 0.0
    out = a({"image": x, "cover_present": present})
    ref = b({"image": x[present], "cover_present": torch.ones(4, dtype=torch.bool)})
    torch.testing.assert_close(out[present], ref)
    assert torch.all(out[~present] == 0)
    for (name, ra), rb in zip(a.backbone.named_buffers(), b.backbone.buffers()):
        torch.testing.assert_close(ra, rb, msg=name)  # running statistics from real covers alone
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in a.backbone.parameters())
    # one cover in a training batch: the full batch runs (BatchNorm needs more than one value)
    one = torch.tensor([True, False, False, False, False, False])
    assert a({"image": x, "cover_present": one}).shape == (6, a.out_dim)
    # no cover: no backbone, no gradient into it
    none = a({"image": x, "cover_present": torch.zeros(6, dtype=torch.bool)})
    assert torch.all(none == 0) and not none.requires_grad


def test_batchnorm_folding_keeps_the_outputs(predictor, bundle):
    from vtag.models.image import fold_batchnorm

    enc = predictor.model.encoders["image"]
    assert enc._inference is not None  # Predictor.load prepared it
    x = torch.randn(3, 3, 32, 32)
    folded, n = fold_batchnorm(enc.backbone, x)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in enc.backbone.modules())
    assert n == n_bn > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), enc.backbone(x), rtol=1e-4, atol=1e-5)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.backbone.modules())  # training copy untouched


def test_skip_absent_is_a_config_switch():
    assert resolve_config({})["image"]["skip_absent"] is True
    cfg = resolve_config({"image": {"backbone": "test_efficientnet", "input_size": 32, "skip_absent": False}})
    assert ImageEncoder(cfg["image"], pretrained=False).skip_absent is False


# ---------------------------------------------------------------- decode threads, layout, transfer
def test_decode_pool_and_channels_last_do_not_change_the_pixels(bundle):
    import concurrent.futures as cf

    rows = _mixed(bundle[2])
    pre = CoverPreprocessor(resolve_config({"image": {"input_size": 40}})["image"])
    ref, ok = pre(rows["cover"].tolist())
    with cf.ThreadPoolExecutor(3) as pool:
        got, ok2 = pre(rows["cover"].tolist(), pool=pool, channels_last=True)
    assert got.is_contiguous(memory_format=torch.channels_last) and ref.is_contiguous()
    assert torch.equal(got, ref) and torch.equal(ok, ok2)


def test_one_transfer_honours_channels_last():
    batch = {"image": torch.randn(2, 3, 8, 8), "ids": torch.arange(2)}
    nhwc = to_device(batch, "cpu", channels_last=True)["image"]
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and not nhwc.is_contiguous()
    assert to_device({"image": nhwc}, "cpu", channels_last=False)["image"].is_contiguous()
    assert to_device({"image": nhwc}, "cpu", channels_last=None)["image"] is nhwc


@pytest.mark.parametrize("channels_last", [False, True])
def test_decode_channels_last_reaches_the_backbone(bundle, channels_last):
    pred = Predictor.load(bundle[0], device="cpu")
    pred.channels_last = channels_last
    layouts = []
    for m in _backbones(pred.model):
        m.register_forward_pre_hook(lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    pred.predict(bundle[2].iloc[:5])
    pred.close()
    assert layouts and set(layouts) == {channels_last}


def test_prefetcher_keeps_order_bounds_the_queue_and_raises():
    running, peak, lock = [0], [0], threading.Lock()

    def work(i):
        with lock:
            running[0] += 1
        time.sleep(0.002)
        return i * i

    got = []
    for i, r in Prefetcher(work, range(20), depth=3):
        with lock:
            peak[0] = max(peak[0], running[0] - len(got))
        got.append((i, r))
        time.sleep(0.003)
    assert got == [(i, i * i) for i in range(20)]
    assert peak[0] <= 4  # at most depth ahead, plus the one being consumed
    assert list(Prefetcher(work, range(3), depth=0)) == [(0, 0), (1, 1), (2, 4)]

    def bad(i):
        if i == 2:
            raise RuntimeError("row 2")
        return i

    with pytest.raises(RuntimeError, match="row 2"):
        list(Prefetcher(bad, range(5), depth=2))


def test_compile_failure_falls_back_to_eager(predictor, bundle, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    ref = predictor.predict(bundle[2].iloc[:6])
    assert predictor.compile_backbone() is False
    got = predictor.predict(bundle[2].iloc[:6])
    assert got["leaf_id"].tolist() == ref["leaf_id"].tolist()


# ---------------------------------------------------------------- GPU decoder logic (any device)
def test_gpu_decoder_routes_rows_and_keeps_bad_covers_missing(bundle):
    rows = _mixed(bundle[2])
    covers = rows["cover"].tolist()
    pre = CoverPreprocessor(resolve_config({"image": {"input_size": 40}})["image"])
    ref, ok = pre(covers)
    dec = GpuCoverDecoder(pre, "cpu", channels_last=True)
    got, ok2 = dec(covers)
    assert ok2.tolist() == ok.tolist()
    assert got.shape == ref.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.all(got[~ok2] == 0)
    assert dec.stats["cpu"] == 1  # the PNG
    assert dec.stats["gpu"] == int(ok.sum()) - 1
    diff = (got[ok] - ref[ok]).abs()
    assert float(diff.mean()) < 0.05  # another decoder and resize: close, not equal (normalized units)
    assert not jpeg_for_gpu(covers[2]) and not jpeg_for_gpu(covers[1]) and not jpeg_for_gpu(covers[3])


# ---------------------------------------------------------------- CUDA only
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_gpu_decode_matches_the_cpu_path(bundle):
    rows = _mixed(bundle[2], n=len(bundle[2]))
    pred = Predictor.load(bundle[0], device="cuda")
    assert pred._host_batcher().gpu_decoder is not None
    new = pred.predict(rows)
    pred.use_legacy_path()
    old = pred.predict(rows)
    pred.close()
    assert new["cover_missing"].tolist() == old["cover_missing"].tolist()
    assert (new["leaf_id"] == old["leaf_id"]).mean() >= 0.99
    assert np.abs(new["score"].to_numpy() - old["score"].to_numpy()).max() < 2e-2


def test_token_cache_gives_jiebas_tokens(bundle):
    from vtag.models.text import TextFeaturizer, tokenize

    text = Predictor.load(bundle[0], device="cpu").featurizer.text
    rows = [("今天的小猫视频太可爱了", "搞笑 猫咪 日常"), ("小猫视频", ""), ("今天的小猫视频太可爱了", "搞笑 猫咪 日常")]
    cached = [text.tokens(t, d) for t, d in rows]
    first = cached[0][0]
    assert cached[2][0] == first and cached[0][0] is first  # the tokenizer keeps it
    before = TextFeaturizer.TOKEN_CACHE_SIZE
    TextFeaturizer.TOKEN_CACHE_SIZE = 0
    try:
        plain = [text.tokens(t, d) for t, d in rows]
        assert plain == cached
        assert plain[0][0] == tokenize(text.tokenizer, rows[0][0], int(text.cfg["max_title_chars"]))[: text.max_tokens]
        ids = text.transform([r[0] for r in rows], [r[1] for r in rows])
    finally:
        TextFeaturizer.TOKEN_CACHE_SIZE = before
    again = text.transform([r[0] for r in rows], [r[1] for r in rows])
    for k in ids:
        np.testing.assert_array_equal(ids[k], again[k])


def test_predict_iter_streams_frames_in_order(predictor, bundle):
    frame = _mixed(bundle[2], n=len(bundle[2]))
    predictor.batch_size = 4
    frames = [frame.iloc[:9], frame.iloc[9:9], frame.iloc[9:10], frame.iloc[10:]]
    outs = list(predictor.predict_iter(iter(frames)))
    assert [len(o) for o in outs] == [len(f) for f in frames]
    whole = predictor.predict(frame)
    got = [o for o in outs if len(o)]
    import pandas as pd

    joined = pd.concat(got, ignore_index=True)
    assert joined["video_id"].tolist() == whole["video_id"].tolist()
    assert joined["leaf_id"].tolist() == whole["leaf_id"].tolist()
    # the same rows in micro-batches of another shape: BLAS may round the last bit differently
    np.testing.assert_allclose(joined["score"], whole["score"], rtol=1e-5, atol=1e-7)
    assert list(outs[1].columns) == list(whole.columns)
