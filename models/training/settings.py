"""The ``train:`` section of a model config: defaults, validation, and the config's identity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

#: Defaults of the ``train:`` section (a config's values override these).
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10,  # upper bound; early stopping and --max-minutes may end sooner
    "batch_size": 64,  # rows per micro-batch (per rank under DDP)
    "eval_batch_size": 256,  # validation micro-batch
    "lr": 1e-3,  # AdamW peak learning rate
    "backbone_lr_mult": 1.0,  # lr factor for parameters under an image ``backbone``
    "embedding_lr_mult": 15.0,  # lr factor for embedding tables (token / n-gram / id) and the head's wide path
    "weight_decay": 0.01,  # not applied to biases and norm weights (1-D parameters)
    "warmup_steps": None,  # linear warm-up; None: 5% of all optimizer steps, at most 200
    "min_lr_ratio": 0.05,  # cosine decay floor, as a share of the peak lr
    "grad_accum": 1,  # micro-batches per optimizer step
    "clip_grad_norm": 5.0,  # 0/None: no clipping
    "val_fraction": 0.1,  # share of rows (whole uploaders) held out for validation
    "val_split": "auto",  # time (latest rows by upload_ts) | grouped (by uploader) | auto: time when timestamps exist
    "early_stop_metric": "hf1",  # hf1 | leaf_acc | auprc | hf1_macro (validation, after decoding)
    "patience": 3,  # epochs without improvement before stopping
    "min_epochs": 1,  # the kept weights come from epoch >= this (and early stopping waits for it); see docs/model.md
    "amp": "bf16",  # CUDA only: bf16 | fp16 (with a GradScaler) | off
    "channels_last": True,  # CUDA only: NHWC model and images
    "cache_features": "auto",  # true: featurize every row once (no augmentation); auto: when it fits
    "cache_limit_mb": 2048,  # and no augmentation is asked for
    "augment": True,  # random image augmentation of training covers (featurizer's train transform)
    "ema_epochs": 0.0,  # > 0: validate and ship an exponential moving average of the weights (horizon in epochs)
    "find_unused_parameters": False,  # DDP only: set for heads/fusions that skip parameters
    "seed": 0,
}

CHECKPOINT_DIR = "checkpoint"
EARLY_STOP_METRICS = ("hf1", "leaf_acc", "auprc", "hf1_macro")


def train_settings(config: Mapping[str, Any]) -> dict:
    """The ``train:`` section with defaults filled in."""
    given = dict(config.get("train") or {})
    unknown = sorted(set(given) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"model config: unknown key(s) in train: {unknown} (known: {sorted(TRAIN_DEFAULTS)})")
    out = dict(TRAIN_DEFAULTS)
    out.update({k: v for k, v in given.items() if v is not None or k == "warmup_steps"})
    return out


def run_settings(config: Mapping[str, Any], *, epochs: int | None = None, seed: int | None = None) -> dict:
    """:func:`train_settings` with a run's ``epochs`` / ``seed`` overrides applied (and checked).

    Parameters
    ----------
    config : mapping
        A resolved model config.
    epochs, seed : int, optional
        Override ``train.epochs`` / ``train.seed``.
    """
    settings = train_settings(config)
    if epochs is not None:
        settings["epochs"] = int(epochs)
    settings["seed"] = int(settings["seed"] if seed is None else seed)
    metric = str(settings["early_stop_metric"])
    if metric not in EARLY_STOP_METRICS:
        raise ValueError(f"train.early_stop_metric must be hf1, leaf_acc, auprc or hf1_macro, got {metric!r}")
    return settings


def config_key(config: Mapping[str, Any]) -> str:
    """Hash of the config less ``train``/``decode``/``bundle`` (what a resumed run must share)."""
    body = {k: v for k, v in config.items() if k not in ("train", "decode", "bundle")}
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_model_config(path: str | Path) -> dict:
    """Parse a ``conf/model/*.yaml`` (plain YAML mapping)."""
    import yaml

    cfg = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a model config must be a YAML mapping")
    return cfg


def default_taxonomy_path(config: Mapping[str, Any]) -> Path:
    """``config['taxonomy']`` if set, else the packaged ``conf/taxonomy/demo-v1.yaml``."""
    if config.get("taxonomy"):
        return Path(str(config["taxonomy"]))
    from vtag import conf_dir

    return conf_dir() / "taxonomy" / "demo-v1.yaml"
