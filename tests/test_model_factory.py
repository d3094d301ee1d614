"""VtagModel end to end on tiny dims: every fusion x head, gradients, batch size 1, nulls, ablations."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from vtag.models.factory import DEFAULT_CONFIG, create_model, resolve_config
from vtag.models.featurize import Featurizer, collate

TINY = {
    "text": {
        "max_tokens": 12,
        "vocab": {"min_count": 1},
        "bow": {"buckets": 97, "dim": 8},
        "cnn": {"embed_dim": 8, "widths": [2, 3], "channels": 4, "attn_dim": 4},
    },
    "image": {"backbone": "test_efficientnet", "input_size": 64, "proj_dim": 8},
    "context": {"dim": 4, "uploader_buckets": 31, "program_buckets": 7, "duration_buckets": 6},
    "fusion": {"dim": 8, "rank": 2},
    "head": {"hidden": 8, "local_hidden": 4},
}

FUSIONS = ["concat", "centralnet", "lmf"]
HEADS = ["flat", "dhmcn_v1", "dhmcn_v2", "dhmcn_v3"]


def with_(base: dict, **sections) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in sections.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


def jpeg(color, size=(96, 54)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def png(size=(40, 70)) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 4), dtype=np.uint8), "RGBA").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "video_id": ["v1", "v2", "v3", "v4", "v5"],
            "title": ["【王者荣耀】新英雄实战教学#王者荣耀#😂", "漫威蜘蛛侠真人电影解说", None, "", "烘焙 蛋糕 第3期!!"],
            "description": ["多人竞技 上分", None, "家常菜做法", None, "超简单"],
            "cover": [jpeg("red"), b"\xff\xd8\xff\xe0 not really a jpeg", None, b"", png()],
            "uploader_id": ["u1", "u2", None, "u1", "u9"],
            "source_program": [None, "p1", "p2", None, "p1"],
            "duration_s": [30, None, 7200, 0, 95],
            "labels": [["game_ip_wzry", "game_theme_moba"], ["film_ip_spiderman", "film_live"], ["food_home"],
                       ["game_theme_rpg"], ["food_bake"]],
        }
    )


def build(tax, frame, config):
    feat = Featurizer.fit(tax, config, frame)
    torch.manual_seed(0)
    model = create_model(config, tax, feat)
    return feat, model


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("head", HEADS)
def test_every_parameter_gets_a_gradient(tiny_taxonomy, frame, fusion, head):
    config = with_(TINY, fusion={"name": fusion}, head={"name": head})
    feat, model = build(tiny_taxonomy, frame, config)
    batch, y = feat.transform(frame), feat.targets(frame)
    model.train()
    out = model(batch)
    assert out["prob"].shape == (len(frame), tiny_taxonomy.n_nodes)
    loss = model.loss(out, y)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, bad
    prob = model.predict_proba(batch)
    assert ((prob >= 0) & (prob <= 1)).all() and torch.isfinite(prob).all()
    assert model.training  # mode restored


@pytest.mark.parametrize("head", ["dhmcn_v2", "dhmcn_v3"])
def test_max_constraint_model(tiny_taxonomy, frame, head):
    config = with_(TINY, head={"name": head, "max_constraint": True})
    feat, model = build(tiny_taxonomy, frame, config)
    out = model(feat.transform(frame))
    model.loss(out, feat.targets(frame)).backward()
    prob = out["prob"].detach()
    parent = torch.as_tensor(tiny_taxonomy.parent_index)
    child = torch.nonzero(parent >= 0).flatten()
    assert (prob[:, parent[child]] >= prob[:, child] - 1e-6).all()  # no violation by construction


def test_batch_size_one(tiny_taxonomy, frame):
    feat, model = build(tiny_taxonomy, frame, TINY)
    one = frame.iloc[[1]]  # corrupt cover, null description
    batch = feat.transform(one)
    model.train()
    out = model(batch)
    model.loss(out, feat.targets(one)).backward()
    assert out["prob"].shape == (1, tiny_taxonomy.n_nodes)
    assert torch.isfinite(model.predict_proba(batch)).all()


def test_all_null_row_and_corrupt_cover(tiny_taxonomy, frame):
    feat, model = build(tiny_taxonomy, frame, TINY)
    nulls = pd.DataFrame({"video_id": ["x"], "title": [None], "description": [None], "cover": [None],
                          "uploader_id": [None], "source_program": [None], "duration_s": [None]})
    only_id = pd.DataFrame({"video_id": ["y"]})  # every optional column absent
    for f in (nulls, only_id):
        batch = feat.transform(f)
        assert not batch["cover_present"].any()
        assert batch["text_ids"].abs().sum() == 0 and batch["bow_ids"].abs().sum() == 0
        assert torch.isfinite(model.predict_proba(batch)).all()
    batch = feat.transform(frame)
    assert batch["cover_present"].tolist() == [True, False, False, False, True]
    assert (batch["image"][~batch["cover_present"]] == 0).all()


def test_featurization_is_deterministic(tiny_taxonomy, frame):
    f1 = Featurizer.fit(tiny_taxonomy, TINY, frame)
    f2 = Featurizer(tiny_taxonomy, TINY, f1.vocab)
    a, b, c = f1.transform(frame), f1.transform(frame), f2.transform(frame.copy())
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]), k
    # slicing and re-joining batches gives the same tensors
    parts = collate([f1.transform(frame.iloc[:2]), f1.transform(frame.iloc[2:])])
    for k in a:
        assert torch.equal(parts[k], a[k]), k
    assert Featurizer.fit(tiny_taxonomy, TINY, frame).vocab == f1.vocab


def test_batch_keys_and_shapes(tiny_taxonomy, frame):
    feat = Featurizer.fit(tiny_taxonomy, TINY, frame)
    b = feat.transform(frame)
    n = len(frame)
    assert b["text_ids"].shape == (n, 12) and b["text_ids"].dtype == torch.int64
    assert b["bow_ids"].shape == (n, 24)
    assert b["text_feats"].shape == (n, 11) and b["text_feats"].dtype == torch.float32
    assert b["image"].shape == (n, 3, 64, 64)
    assert b["cover_present"].dtype == torch.bool
    assert b["uploader"].shape == (n, 2) and b["program"].shape == (n, 2) and b["duration"].shape == (n,)
    assert b["uploader"][0].tolist() == b["uploader"][3].tolist()  # same uploader, same buckets
    assert (b["uploader"][2] == 0).all() and b["duration"][1] == 0


def test_targets_are_ancestor_closed(tiny_taxonomy, frame):
    feat = Featurizer.fit(tiny_taxonomy, TINY, frame)
    y = feat.targets(frame).numpy().astype(bool)
    idx = tiny_taxonomy.index
    assert y[1, idx["film"]] and y[1, idx["film_ip"]] and y[1, idx["film_ip_marvel"]] and y[1, idx["film_form"]]
    assert (tiny_taxonomy.close_ancestors(y) == y).all()
    assert feat.primary_leaf(frame).tolist()[:2] == [idx["game_ip_wzry"], idx["film_ip_spiderman"]]
    bad = frame.iloc[[0]].assign(labels=[["nope"]])
    with pytest.raises(ValueError, match="nope"):
        feat.targets(bad)
    assert feat.targets(bad, strict=False).sum() == 0
    odd = pd.DataFrame({"labels": [None, float("nan"), pd.NA, "food_bake", np.array(["film_anim"])]})
    y = feat.targets(odd)
    assert y[:3].sum() == 0 and y[3, idx["food"]] == 1 and y[4, idx["film"]] == 1


@pytest.mark.parametrize(
    "mods, fusion",
    [(["text"], "lmf"), (["image"], "lmf"), (["context"], "centralnet"), (["text", "context"], "concat")],
)
def test_ablations_through_config(tiny_taxonomy, frame, mods, fusion):
    config = with_(TINY, modalities=mods, fusion={"name": fusion})
    feat, model = build(tiny_taxonomy, frame, config)
    batch = feat.transform(frame)
    assert ("image" in batch) == ("image" in mods)
    assert ("text_ids" in batch) == ("text" in mods)
    assert ("uploader" in batch) == ("context" in mods)
    assert "cover_present" in batch
    assert set(model.encoders) == set(mods)
    out = model(batch)
    model.loss(out, feat.targets(frame)).backward()
    assert out["prob"].shape == (len(frame), tiny_taxonomy.n_nodes)


def test_cached_image_features(tiny_taxonomy, frame):
    feat, model = build(tiny_taxonomy, frame, TINY)
    model.eval()
    batch = feat.transform(frame)
    with torch.no_grad():
        cached = dict(batch, image_feats=model.encoders["image"].backbone_features(batch["image"]))
        del cached["image"]
        assert torch.allclose(model(batch)["prob"], model(cached)["prob"], atol=1e-6)


def test_resolve_config():
    cfg = resolve_config({"fusion": {"name": "concat"}, "train": {"epochs": 3}, "modalities": ["context", "text"]})
    assert cfg["fusion"]["name"] == "concat" and cfg["fusion"]["dim"] == DEFAULT_CONFIG["fusion"]["dim"]
    assert cfg["modalities"] == ["text", "context"] and cfg["train"] == {"epochs": 3}
    assert resolve_config(cfg) == cfg
    with pytest.raises(ValueError, match="fusoin|dimm"):
        resolve_config({"fusion": {"dimm": 3}})
    with pytest.raises(ValueError, match="modalities"):
        resolve_config({"modalities": ["audio"]})
    with pytest.raises(ValueError, match="leaf_smoothing"):
        resolve_config({"loss": {"leaf_smoothing": 1.0}})
    with pytest.raises(ValueError, match="replay_count"):
        resolve_config({"context": {"profile": {"replay_count": "votes"}}})
    with pytest.raises(ValueError, match="replay_min_score"):
        resolve_config({"context": {"profile": {"replay_min_score": 1.5}}})


@pytest.mark.parametrize("name", ["demo", "cpu-small", "xception", "efficientnet-lite0", "text-context", "image-context"])
def test_shipped_configs_resolve(name):
    import yaml

    from tests.builders import REPO_ROOT

    cfg = resolve_config(yaml.safe_load((REPO_ROOT / "conf" / "model" / f"{name}.yaml").read_text()))
    assert cfg["name"] == name
