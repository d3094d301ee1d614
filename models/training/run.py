"""``train(config, taxonomy, frames, out_dir) -> TrainResult``: one pure function for the CLI, the
benches and Spark's ``TorchDistributor`` (``models/distributed.py``), composed of the parts of
this package:

1. **Data** (:func:`prepare_data`). Rows whose ``labels[0]`` is not a taxonomy node are dropped; the
   rest are split into train / validation (``train.val_split``: the latest rows by upload time, or
   grouped by uploader). The featurizer is fitted on the training side only; uploader profiles of
   training rows are leakage-free (:mod:`vtag.models.profiles`).
2. **Model** (:func:`build_model`): the factory's model, an optional warm start, the frozen TF-IDF
   SVM (``head.tfidf_wide: svm|mix``), AdamW groups (:mod:`vtag.models.training.schedule`), DDP when
   ``torch.distributed`` is initialised.
3. **Loop** (:mod:`vtag.models.training.loop`): epochs of optimizer steps, validation after each,
   early stopping, the best weights kept; a checkpoint after every epoch and when the time budget
   stops the run (:mod:`vtag.models.training.checkpoint`); ``resume=True`` continues from it.
4. **Bundle** (:func:`finish`): the best weights, the SVM's mix weight and ``decode.stop_threshold`` /
   ``decode.primary: auto`` chosen on the validation rows, written as a model bundle (:mod:`vtag.models.bundle`).

Under DDP each rank takes an equal shard of every epoch's shuffle; rank 0 validates, checkpoints
and writes the bundle; stop decisions are broadcast to all ranks.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from vtag.models.training.checkpoint import LoopState, read_resume_state, restore, save_checkpoint
from vtag.models.training.ddp import check_same_vocab, dist_info, training_device
from vtag.models.training.ema import WeightAverage
from vtag.models.training.features import FeatureSource, concat_frames
from vtag.models.training.loop import EpochRunner, Validation
from vtag.models.training.post import (
    auto_decode,
    calibrate_temperature,
    fit_svm_wide,
    mix_profile_evidence,
    mix_svm,
    refit_svm_wide,
    shipped_validation,
    svm_fit_rows,
    warn_if_coverless,
)
from vtag.models.training.schedule import param_groups, warmup_steps
from vtag.models.training.settings import CHECKPOINT_DIR, config_key, run_settings
from vtag.models.training.state import seed_everything

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` did. ``metrics``: the best validation metrics (``vtag.hierarchy.metrics.evaluate``
    keys); ``stopped``: ``epochs`` | ``early_stop`` | ``time_budget``; epochs are 1-based."""

    bundle_dir: str | None
    model_version: str | None
    metrics: dict
    history: list[dict]
    epochs_run: int
    best_epoch: int
    steps: int
    seconds: float
    stopped: str
    train_rows: int
    val_rows: int
    rank: int = 0
    world_size: int = 1
    extra: dict = field(default_factory=dict)
    #: the trained model (best weights, eval mode) and its featurizer — in memory only
    model: Any = field(default=None, repr=False, compare=False)
    featurizer: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The JSON-able fields (the in-memory model and featurizer left out, never copied: they
        hold locks and thread pools)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)
                if f.name not in ("model", "featurizer")}


@dataclass
class RunData:
    """The labeled rows of a run: ``frame`` (all kept rows), its ``train`` / ``val`` sides, the
    fitted ``featurizer``, ``targets [n_train, n_nodes]`` int8 (1 / 0 / -1 unknown) and the
    training rows' features (:class:`~vtag.models.training.features.FeatureSource`)."""

    frame: Any
    train: Any
    val: Any
    featurizer: Any
    targets: Any
    source: FeatureSource
    #: what was not trained on: :func:`vtag.models.data.label_summary` of the rows given (train and
    #: validation) plus ``repeated_videos`` and ``validation_videos_in_training``
    labels: dict = field(default_factory=dict)


def prepare_data(config, taxonomy, settings: Mapping[str, Any], train_frames, val_frames, featurizer, *,
                 resumed: bool, ckpt_dir: Path, is_main: bool) -> RunData:
    """Labels checked, the validation split, the featurizer (fitted on the training side, or the
    checkpoint's vocabulary when resuming, or the one given) and leakage-free training profiles.

    Parameters
    ----------
    config, taxonomy, settings
        The resolved model config, the taxonomy and the ``train:`` settings.
    train_frames, val_frames
        Labeled frame(s); ``val_frames`` None: split from ``train_frames`` (``train.val_split``).
    featurizer : Featurizer, optional
        A fitted featurizer to reuse.
    resumed : bool
        A checkpoint is being resumed (its ``vocab.txt`` and n-gram keys are reused).
    ckpt_dir : Path
    is_main : bool
        Rank 0 (writes ``vocab.txt``).
    """
    import torch

    from vtag.models.bundle import ngram_keys_in_file, read_vocab, write_vocab
    from vtag.models.data import check_labels, label_summary, latest_per_video, validation_split
    from vtag.models.factory import profile_enabled
    from vtag.models.featurize import Featurizer
    from vtag.models.profiles import ProfileTable, leakage_free_profiles, with_profiles

    given, repeated = latest_per_video(concat_frames(train_frames))
    if repeated:
        log.warning("training data: %d rows repeat a video_id of a later (or the same) day: the latest row of "
                    "each video is kept", repeated)
    val_given, in_both = None, 0
    if val_frames is not None:  # explicit validation rows: a video in them never trains too
        val_given, _ = latest_per_video(concat_frames(val_frames))
        both = given["video_id"].notna() & given["video_id"].isin(set(val_given["video_id"].dropna()))
        in_both = int(both.sum())
        if in_both:
            log.warning("training data: %d rows are videos of the validation data: not trained on", in_both)
            given = given.loc[~both.to_numpy()].reset_index(drop=True)
    labels = label_summary(given if val_given is None else concat_frames([given, val_given]), taxonomy)
    labels["repeated_videos"] = repeated
    labels["validation_videos_in_training"] = in_both
    frame = check_labels(given, taxonomy)
    warn_if_coverless(frame, config)
    if val_given is not None:
        train_df, val_df = frame, check_labels(val_given, taxonomy)
    else:
        tr, va = validation_split(frame, float(settings["val_fraction"]), int(settings["seed"]),
                                  str(settings["val_split"]))
        train_df, val_df = frame.iloc[tr].reset_index(drop=True), frame.iloc[va].reset_index(drop=True)
    if len(train_df) == 0:
        raise ValueError("no training rows (after dropping rows without a known primary label)")
    if featurizer is None and resumed and (ckpt_dir / "vocab.txt").is_file():
        keys = ngram_keys_in_file(ckpt_dir / "model.safetensors")  # the weights are loaded later
        featurizer = Featurizer(taxonomy, config, read_vocab(ckpt_dir / "vocab.txt"), ngram_keys=keys)
    elif featurizer is None:
        featurizer = Featurizer.fit(taxonomy, config, train_df)
    if getattr(featurizer, "uploader_keys", None) is None:  # head.tfidf_wide_uploader: exact
        max_keys = int(config["head"]["tfidf_wide_max_params"]) // max(1, len(taxonomy.leaf_indices))
        # the uploaders of the rows the final SVM is fitted on (head.tfidf_wide_fit_rows: the latest ones)
        featurizer.fit_uploader_keys(svm_fit_rows(frame, int(config["head"]["tfidf_wide_fit_rows"]),
                                                  int(settings["seed"])), max_keys)
    keys = featurizer.ngram_keys
    check_same_vocab(list(featurizer.vocab) + ([] if keys is None else [" ".join(map(str, keys.tolist()))]))
    if is_main:
        write_vocab(ckpt_dir / "vocab.txt", list(featurizer.vocab))
    if profile_enabled(config):  # leakage-free training profiles; validation sees the training side's
        mode = str(config["context"]["profile"]["train_mode"])
        train_df = with_profiles(train_df, *leakage_free_profiles(train_df, taxonomy, mode))
        featurizer.profiles = ProfileTable.from_labels(train_df, taxonomy)
    targets = featurizer.targets(train_df).to(torch.int8)
    source = FeatureSource(featurizer, train_df, cache=settings["cache_features"],
                           limit_mb=settings["cache_limit_mb"], train=bool(settings["augment"]))
    return RunData(frame, train_df, val_df, featurizer, targets, source, labels)


def build_model(config, taxonomy, data: RunData, settings: Mapping[str, Any], device, *, world: int,
                init_weights=None, fresh: bool = True):
    """``(model, raw_model, optimizer, scaler, ema)``: the factory's model on ``device`` (warm
    started from ``init_weights``; the TF-IDF SVM fitted when the config asks and ``fresh``), its
    AdamW, an fp16 grad scaler or None, its weight average; ``model`` is the DDP wrapper when
    ``world`` > 1, else ``raw_model``."""
    import torch

    from vtag.models.calibration import auto_temperature, set_temperature
    from vtag.models.factory import create_model
    from vtag.models.predictor import autocast_dtype

    seed_everything(int(settings["seed"]))
    raw = create_model(config, taxonomy, data.featurizer)
    if init_weights is not None and fresh:
        missing, unexpected = raw.load_state_dict(dict(init_weights), strict=False)
        if unexpected:
            raise ValueError(f"init_weights has keys the model lacks: {list(unexpected)[:5]}")
        log.info("warm start: %d tensors loaded, %d kept from init", len(init_weights), len(missing))
        if auto_temperature(config):
            set_temperature(raw, 1.0)  # a calibrated start trains at 1 too; chosen again after training
    wide = getattr(raw, "tfidf_wide", None)
    if wide is not None and wide.fitted and fresh and init_weights is None:
        fit_svm_wide(raw, data.featurizer, taxonomy, data.train, data.val, int(settings["seed"]))
    raw = raw.to(device)
    if device.type == "cuda" and bool(settings["channels_last"]):
        raw = raw.to(memory_format=torch.channels_last)
    ema = WeightAverage(raw, float(settings.get("ema_epochs") or 0.0))
    optimizer = torch.optim.AdamW(param_groups(raw, settings), lr=float(settings["lr"]))
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype(device, settings["amp"]) == torch.float16 else None
    model = raw
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(raw, device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=bool(settings.get("find_unused_parameters", False)))
    return model, raw, optimizer, scaler, ema


def run_epochs(loop: LoopState, runner: EpochRunner, validation: Validation, *, seed: int, n_epochs: int,
               checkpoint) -> int:
    """Epochs ``loop.epoch..n_epochs-1`` (none when the saved run had early-stopped): each ends in
    validation and a checkpoint (``checkpoint(reason)``); the time budget and early stopping end
    the run sooner (``loop.stopped``). Returns the number of epochs run."""
    if loop.stopped == "early_stop":
        return 0
    runner.model.train()
    epochs_run, start = 0, loop.epoch
    for epoch in range(start, n_epochs):
        first = loop.micro if epoch == start else 0
        res = runner.run_epoch(loop, epoch, first, seed, n_epochs)
        epochs_run += 1
        scored = runner.ema.model if runner.ema.model is not None else runner.raw_model
        if res.time_up:
            done = res.micro + 1 >= runner.batches_per_epoch
            validation.after_epoch(loop, scored, epoch, res.loss, partial=not done, final=True)
            loop.epoch, loop.micro = (epoch + 1, 0) if done else (epoch, res.micro + 1)
            loop.stopped = "time_budget"
            checkpoint("time_budget")
            break
        stop = validation.after_epoch(loop, scored, epoch, res.loss)
        loop.epoch, loop.micro = epoch + 1, 0
        if stop:
            loop.stopped = "early_stop"
            checkpoint("early_stop")
            break
        checkpoint("epoch")
    return epochs_run


def finish(result: TrainResult, raw_model, data: RunData, config: dict, taxonomy, settings, device, *,
           ckpt_dir: Path, out_dir: Path, write_bundle: bool, label: str, data_desc) -> TrainResult:
    """Rank 0 after the loop: the best weights back in ``raw_model``, the choices made on the
    validation rows (SVM mix weight, ``decode.stop_threshold: auto``), the bundle's profiles (all
    labeled rows) and the bundle itself."""
    from safetensors.torch import load_file

    from vtag.models.bundle import save_bundle
    from vtag.models.calibration import auto_temperature
    from vtag.models.evaluate import primary_label_nodes
    from vtag.models.factory import profile_enabled
    from vtag.models.profiles import ProfileTable
    from vtag.models.provenance import data_ids, describe_split

    raw_model.eval()
    result.model, result.featurizer = raw_model, data.featurizer
    if (ckpt_dir / "best.safetensors").is_file():
        raw_model.load_state_dict(load_file(str(ckpt_dir / "best.safetensors")))
    history = result.history
    best_row = next((h for h in reversed(history) if h["epoch"] == result.best_epoch), history[-1] if history else {})
    metrics = {k: v for k, v in best_row.items() if k not in ("epoch", "step", "train_loss", "seconds", "partial")}
    result.metrics = metrics
    metric_name = str(settings["early_stop_metric"])
    channels_last = device.type == "cuda" and bool(settings["channels_last"])
    decode = dict(config.get("decode") or {})
    decode_auto = "auto" in (str(decode.get("stop_threshold")), str(decode.get("primary")))
    nodes = primary_label_nodes(taxonomy, data.frame) if decode_auto else None
    if nodes is not None:  # labels that stop above the leaves; before the DHMCN mix and the replay decode
        decode["label_nodes"] = nodes
        config["decode"] = decode
        metrics["label_nodes"] = len(nodes)
    wide = getattr(raw_model, "tfidf_wide", None)
    if wide is not None and wide.mix and len(data.val):
        metrics["tfidf_mix"] = mix_svm(raw_model, data.featurizer, taxonomy, data.val, config, device, settings,
                                       channels_last, metric_name)
    calibrate = auto_temperature(config) and len(data.val)
    if calibrate:  # before the evidence's replay: it counts each tag by its score
        metrics["temperature"] = calibrate_temperature(raw_model, data.featurizer, taxonomy, data.val, device,
                                                       settings, channels_last)
    if getattr(raw_model, "profile_evidence", None) is not None and len(data.val):
        metrics["profile_evidence"] = mix_profile_evidence(raw_model, data.featurizer, taxonomy, data.val, config,
                                                           device, settings, channels_last, metric_name)
        if calibrate:  # the evidence sharpens the scores: fitted again with it in place
            metrics["temperature"] = calibrate_temperature(raw_model, data.featurizer, taxonomy, data.val, device,
                                                           settings, channels_last)
    if decode_auto:
        chosen = auto_decode(raw_model, data.featurizer, taxonomy, data.val, config, device, settings, channels_last)
        config["decode"] = {**decode, **chosen}
        metrics["stop_threshold"] = chosen["stop_threshold"]
        metrics["decode_primary"] = chosen["primary"]
    shipped = shipped_validation(raw_model, data.featurizer, taxonomy, data.val, config, device, settings,
                                 channels_last)
    if shipped is not None:
        metrics["shipped"] = shipped
    if wide is not None and wide.mix and bool(config["head"]["tfidf_wide_refit"]):
        info = refit_svm_wide(raw_model, data.featurizer, taxonomy, data.train, data.val, int(settings["seed"]))
        if info is not None:
            metrics["tfidf_refit_rows"] = int(info["fit_rows"])  # head.tfidf_wide_fit_rows may cap them
    if profile_enabled(config):  # the bundle carries the profiles of all its labeled rows
        data.featurizer.profiles = ProfileTable.from_labels(data.frame, taxonomy)
    if not write_bundle:
        return result
    frame = data.frame
    dts = sorted({str(d) for d in frame["dt"].dropna().unique()}) if "dt" in frame.columns else []
    info = {
        **dict(data_desc or {}),
        "dates": f"{dts[0]} .. {dts[-1]} ({len(dts)} days)" if dts else "-",
        "rows": len(frame),
        "train_rows": result.train_rows,
        "val_rows": result.val_rows,
        "uploaders": int(frame["uploader_id"].nunique()),
        # rows given but not trained on: no label, or a primary label outside the taxonomy
        "rows_dropped": data.labels.get("rows_without_label", 0) + data.labels.get("rows_unknown_label", 0),
        "unknown_labels": data.labels.get("unknown_labels", {}),
        "repeated_videos": data.labels.get("repeated_videos", 0),  # earlier rows of a video_id, not trained on
        # training rows whose video is in the explicit validation data (--val-data), not trained on
        "validation_videos_in_training": data.labels.get("validation_videos_in_training", 0),
        "epochs": len(history),
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "seed": int(settings["seed"]),
        "device": str(device) + (f" x{result.world_size}" if result.world_size > 1 else ""),
        "stopped": result.stopped,
        "ids": data_ids(data.train, data.val),  # models/provenance.py: vtag evaluate's overlap check
        "validation_split": describe_split(data.train, data.val),  # what the model card's metrics are on
    }
    meta = save_bundle(
        out_dir, config=config, taxonomy=taxonomy, featurizer=data.featurizer, model=raw_model,
        metrics={"validation": metrics, "early_stop_metric": metric_name, "best_epoch": result.best_epoch,
                 "history": history},
        label=label, train_info=info,
    )
    result.bundle_dir, result.model_version = str(out_dir), meta.model_version
    return result


def train(
    config: Mapping[str, Any],
    taxonomy,
    train_frames,
    out_dir: str | Path,
    *,
    max_minutes: float | None = None,
    seed: int | None = None,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
    epochs: int | None = None,
    val_frames=None,
    label: str = "",
    data_desc: Mapping[str, Any] | None = None,
    write_bundle: bool = True,
    featurizer=None,
    init_weights: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train a model on ``train_frames`` (a labeled frame or a list of them) and write a bundle.

    Parameters
    ----------
    config : mapping
        A parsed ``conf/model/*.yaml``.
    taxonomy : vtag.hierarchy.taxonomy.Taxonomy
    train_frames : DataFrame or list of DataFrame
        Labeled rows (``LABELED_SCHEMA`` columns).
    out_dir : str or Path
        The bundle directory (checkpoints go to ``out_dir/checkpoint``).
    max_minutes : float, optional
        Wall-clock budget; when spent the run stops after the current optimizer step,
        checkpoints, and still writes the bundle.
    seed, epochs : int, optional
        Override ``train.seed`` / ``train.epochs``.
    device : str, optional
        'cpu', 'cuda', 'cuda:N' or None (CUDA when available; under DDP the local rank's GPU).
    resume : bool
        Continue from the checkpoint in ``out_dir``.
    progress : bool
        Progress bars and one line per epoch.
    val_frames : DataFrame or list, optional
        An explicit validation set (default: split from ``train_frames``, ``train.val_split``).
    label : str
        Human label stored beside the model version.
    data_desc : mapping, optional
        Where the data came from (recorded in the bundle's training info).
    write_bundle : bool
        False: train only (the result carries the model in memory).
    featurizer : Featurizer, optional
        A fitted featurizer to reuse (benches); default: fitted here.
    init_weights : mapping, optional
        A (partial) state dict to start from (warm start); shapes must match.

    Returns
    -------
    TrainResult
    """
    t_start = time.monotonic()
    from vtag.models.factory import resolve_config

    config = resolve_config({k: v for k, v in dict(config).items() if k not in ("bundle", "preprocessing", "profiles")})
    settings = run_settings(config, epochs=epochs, seed=seed)
    seed, n_epochs = int(settings["seed"]), int(settings["epochs"])
    config["train"] = {**dict(config.get("train") or {}), "seed": seed, "epochs": n_epochs}
    rank, world = dist_info()
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    dev = training_device(device, rank, world)
    saved = read_resume_state(ckpt_dir, taxonomy=taxonomy, config=config, seed=seed) if resume else {}
    seed_everything(seed)
    data = prepare_data(config, taxonomy, settings, train_frames, val_frames, featurizer, resumed=bool(saved),
                        ckpt_dir=ckpt_dir, is_main=rank == 0)
    model, raw, optimizer, scaler, ema = build_model(config, taxonomy, data, settings, dev, world=world,
                                                     init_weights=init_weights, fresh=not saved)
    from vtag.models.predictor import autocast_dtype

    batch_size, accum, n_train = int(settings["batch_size"]), max(1, int(settings["grad_accum"])), len(data.train)
    micro_per_epoch = math.ceil(math.ceil(n_train / world) / batch_size)
    total_steps = math.ceil(micro_per_epoch / accum) * n_epochs
    ema.set_horizon(math.ceil(micro_per_epoch / accum))
    channels_last = dev.type == "cuda" and bool(settings["channels_last"])
    show = progress and rank == 0
    budget_s = None if max_minutes is None else float(max_minutes) * 60.0
    runner = EpochRunner(model, raw, optimizer, scaler, ema, data.source, data.targets, settings, dev,
                         autocast_dtype(dev, settings["amp"]), channels_last, rank, world, batch_size, accum,
                         micro_per_epoch, total_steps, warmup_steps(settings, total_steps), budget_s, t_start, show)
    validation = Validation(data.featurizer, taxonomy, data.val, config, settings, dev, channels_last, ckpt_dir,
                            min(max(1, int(settings.get("min_epochs") or 1)), n_epochs), n_epochs, rank == 0, show,
                            t_start)
    loop = restore(ckpt_dir, saved, model=raw, ema=ema, optimizer=optimizer, scaler=scaler) if saved else LoopState()
    identity = {"metric": validation.metric, "seed": seed, "taxonomy_version": taxonomy.version,
                "config_key": config_key(config), "train_rows": n_train, "world_size": world}

    def checkpoint(reason: str) -> None:
        if rank == 0:
            save_checkpoint(ckpt_dir, loop, reason, model=raw, ema=ema, optimizer=optimizer, scaler=scaler,
                            run=identity)

    epochs_run = run_epochs(loop, runner, validation, seed=seed, n_epochs=n_epochs, checkpoint=checkpoint)
    result = TrainResult(
        bundle_dir=None, model_version=None, metrics={}, history=loop.history, epochs_run=epochs_run,
        best_epoch=loop.best_epoch, steps=loop.step, seconds=round(time.monotonic() - t_start, 2),
        stopped=loop.stopped, train_rows=n_train, val_rows=len(data.val), rank=rank, world_size=world,
    )
    if rank != 0:
        return result
    return finish(result, raw, data, config, taxonomy, settings, dev, ckpt_dir=ckpt_dir, out_dir=out_dir,
                  write_bundle=write_bundle, label=label, data_desc=data_desc)
