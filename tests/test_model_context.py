"""Context: stable hashed ids and duration buckets, encoder shapes."""

from __future__ import annotations

import torch

from vtag.models.context import ContextEncoder, ContextFeaturizer, duration_buckets, hash_ids
from vtag.models.factory import resolve_config

CFG = resolve_config({"context": {"dim": 4, "uploader_buckets": 13, "program_buckets": 5, "duration_buckets": 6}})["context"]


def test_hash_ids_stable_and_null():
    a = hash_ids(["u1", None, "", float("nan"), "u1"], 13, 2, salt=11)
    assert a.shape == (5, 2) and (a[1:4] == 0).all() and (a[0] == a[4]).all()
    assert ((a[0] >= 1) & (a[0] <= 13)).all()
    assert hash_ids(["u1"], 13, 2, salt=11).tolist() == a[:1].tolist()


def test_duration_buckets():
    b = duration_buckets([None, float("nan"), -3, 0, 1, 2, 30, 600, 7200, 10**7], 6, 3600)
    assert b[:3].tolist() == [0, 0, 0]
    assert b[3] == 1 and b[4] == 1
    assert (b[3:] == sorted(b[3:])).all() and b[-1] == 5 and b.max() <= 5


def test_encoder():
    feats = ContextFeaturizer(CFG).transform(["u", None], ["p", None], [12, None])
    batch = {k: torch.from_numpy(v) for k, v in feats.items()}
    enc = ContextEncoder(CFG)
    out = enc(batch)
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_unseen_id_encodes_like_null_and_id_dropout_only_in_training():
    feats = ContextFeaturizer(CFG).transform(["never-seen", None], [None, None], [12, 12])
    batch = {k: torch.from_numpy(v) for k, v in feats.items()}
    enc = ContextEncoder({**CFG, "id_dropout": 1.0}).eval()
    out = enc(batch)
    assert torch.allclose(out[0], out[1])  # zero-initialised tables: an untrained id = null
    with torch.no_grad():
        enc.uploader.weight.add_(1.0)
    assert not torch.allclose(enc(batch)[0], enc(batch)[1])  # eval: ids are used
    enc.train()
    assert enc._drop_ids(batch["uploader"]).abs().sum() == 0  # training, p = 1: all ids dropped
