"""Training: ``train(config, taxonomy, frames, out_dir) -> TrainResult`` and the ``vtag train`` CLI.

One pure function serves the CLI, the benches and Spark's ``TorchDistributor`` (``models/distributed.py``):

1. **Data.** Rows whose ``labels[0]`` is not a taxonomy node are dropped; the rest are split into
   train / validation grouped by uploader (:func:`models.data.grouped_split`, ``train.val_fraction``).
   The featurizer's vocabulary is fitted on the training side only.
2. **Loop.** AdamW (no decay on biases and norms; ``train.backbone_lr_mult`` for the image
   backbone), linear warm-up then cosine decay computed from the global step, gradient
   accumulation (``train.grad_accum``), gradient clipping, AMP (bf16/fp16) and channels-last on
   CUDA only. Seeded: python, numpy and torch RNGs, and each epoch's shuffle comes from
   ``seed + epoch`` so a resumed run sees the same order.
3. **Validation** after every epoch: the model's probabilities are decoded with
   :class:`hierarchy.decode.Decoder` and scored with :func:`hierarchy.metrics.evaluate`; early
   stopping on ``train.early_stop_metric`` (``hf1`` or ``leaf_acc``) with ``train.patience``.
4. **Checkpoint** (``<out_dir>/checkpoint/``) after every epoch and when the time budget stops a
   run: ``model.safetensors``, ``optimizer.safetensors`` (optimizer state as tensors),
   ``best.safetensors`` (best validation weights), ``vocab.txt`` and ``state.json`` (epoch, step,
   position inside the epoch, best metric, history, RNG states). ``resume=True`` continues from it.
5. **Bundle**: the best weights are written as a model bundle to ``out_dir`` (:mod:`models.bundle`).

Distributed: when ``torch.distributed`` is initialised (torchrun / TorchDistributor), the model is
wrapped in DDP (gloo on CPU), each rank takes an equal shard of every epoch's shuffle, rank 0
validates, checkpoints and writes the bundle, and stop decisions are broadcast to all ranks.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)

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


class WeightAverage:
    """Exponential moving average of a model's weights (``train.ema_epochs`` > 0), updated after
    every optimizer step; validation, the best checkpoint and the bundle use the average.

    The horizon is ``ema_epochs`` epochs of steps: ``decay = 1 - 1 / (ema_epochs · steps_per_epoch)``,
    warmed up as ``min(decay, (1 + t) / (10 + t))`` so the first epochs are not dominated by the
    random start (``warmup=False``: the plain decay from the first step, as ``bench/hmc.py`` uses it).
    Persistent buffers (BatchNorm statistics) are copied, not averaged; non-persistent ones (the
    heads' hierarchy constants) never change and are left as deep-copied. Off by default: it
    smooths the noisy per-epoch validation curve of small data sets, but on the Bilibili titles
    (docs/model.md) a one-epoch horizon scored below the raw weights.
    """

    def __init__(self, model, ema_epochs: float, warmup: bool = True):
        import copy

        self.ema_epochs = float(ema_epochs)
        self.warmup = bool(warmup)
        self.model = None
        self.decay, self.t = 0.0, 0
        self._state_buffers: list[str] = []
        if self.ema_epochs > 0:
            self.model = copy.deepcopy(model).eval()
            for p in self.model.parameters():
                p.requires_grad_(False)
            saved = set(model.state_dict())
            self._state_buffers = [n for n, _ in model.named_buffers() if n in saved]

    def set_horizon(self, steps_per_epoch: int) -> None:
        self.decay = 1.0 - 1.0 / max(1.0, self.ema_epochs * max(1, steps_per_epoch))

    def update(self, model) -> None:
        if self.model is None:
            return
        import torch

        d = min(self.decay, (1.0 + self.t) / (10.0 + self.t)) if self.warmup else self.decay
        self.t += 1
        with torch.no_grad():
            torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1.0 - d)
            if self._state_buffers:
                live, kept = dict(model.named_buffers()), dict(self.model.named_buffers())
                for name in self._state_buffers:
                    kept[name].copy_(live[name])

    def load(self, path: Path, model, step: int) -> None:
        """Resume at optimizer ``step``: the saved average (or a copy of ``model`` when the
        checkpoint has none)."""
        if self.model is None:
            return
        from safetensors.torch import load_file

        if path.is_file():
            self.model.load_state_dict(load_file(str(path)))
        else:
            self.model.load_state_dict(model.state_dict())
        self.t = int(step)  # one update per optimizer step


@dataclass
class TrainResult:
    """What :func:`train` did. ``metrics``: the best validation metrics (``hierarchy.metrics.evaluate``
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
        return {k: v for k, v in asdict(self).items() if k not in ("model", "featurizer")}


def train_settings(config: Mapping[str, Any]) -> dict:
    """The ``train:`` section with defaults filled in."""
    given = dict(config.get("train") or {})
    unknown = sorted(set(given) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"model config: unknown key(s) in train: {unknown} (known: {sorted(TRAIN_DEFAULTS)})")
    out = dict(TRAIN_DEFAULTS)
    out.update({k: v for k, v in given.items() if v is not None or k == "warmup_steps"})
    return out


# ---------------------------------------------------------------------- seeding / rng state
def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _rng_state() -> tuple[dict, dict]:
    """(JSON-able python/numpy state, tensors: torch CPU (and CUDA) RNG states)."""
    import numpy as np
    import torch

    py = random.getstate()
    npst = np.random.get_state()
    js = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
    }
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return js, tensors


def _set_rng_state(js: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
    import numpy as np
    import torch

    if "python" in js:
        v, st, g = js["python"]
        random.setstate((v, tuple(st), g))
    if "numpy" in js:
        name, keys, pos, has_g, cached = js["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_g, cached))
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in cuda])


# ---------------------------------------------------------------------- optimizer state <-> safetensors
def optimizer_to_tensors(opt) -> tuple[dict, dict]:
    """``opt.state_dict()`` -> (``{"state.<param>.<key>": tensor}``, JSON-able rest)."""
    import torch

    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{pid}.{k}"] = v.detach().to("cpu").contiguous().clone()
            else:
                scalars[f"{pid}.{k}"] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_tensors(opt, tensors: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Inverse of :func:`optimizer_to_tensors` (loads into ``opt``)."""
    state: dict[int, dict] = {}
    for key, t in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = t
    for key, v in meta.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------------- features
class FeatureSource:
    """Featurized training rows, cached in memory when small enough, else made per batch.

    ``batch(idx)`` -> dict of tensors for the positional indices ``idx`` (a 1-D LongTensor).
    Caching transforms every row once with the eval transform (no augmentation); it is used when
    ``train.cache_features`` is true, or ``auto`` and the tensors fit ``cache_limit_mb``.
    """

    def __init__(self, featurizer, frame, *, cache: Any = "auto", limit_mb: float = 2048, train: bool = True,
                 chunk: int = 512):
        import torch

        self.featurizer = featurizer
        self.frame = frame
        self.train = train
        self._accepts_train = "train" in inspect.signature(featurizer.transform).parameters
        self.cached: dict | None = None
        if cache in (False, "off", "no", None) or len(frame) == 0:
            return
        first = self._transform(frame.iloc[:chunk], train=False)
        per_row = sum(v.element_size() * v.numel() for v in first.values() if isinstance(v, torch.Tensor))
        per_row /= max(1, min(chunk, len(frame)))
        est_mb = per_row * len(frame) / 2**20
        augments = train and self._accepts_train and getattr(featurizer, "image", None) is not None
        if cache == "auto" and (est_mb > float(limit_mb) or augments):
            # uncached: per-batch transforms keep training augmentation and bound memory
            log.info("features: per batch (about %.0f MB if cached)", est_mb)
            return
        parts = [first]
        for start in range(chunk, len(frame), chunk):
            parts.append(self._transform(frame.iloc[start : start + chunk], train=False))
        self.cached = {k: torch.cat([p[k] for p in parts]) for k in first if isinstance(first[k], torch.Tensor)}
        log.info("features: cached %d rows (%.0f MB)", len(frame), est_mb)

    def _transform(self, frame, train: bool):
        if self._accepts_train:
            return self.featurizer.transform(frame, train=train)
        return self.featurizer.transform(frame)

    def batch(self, idx) -> dict:
        if self.cached is not None:
            return {k: v.index_select(0, idx) for k, v in self.cached.items()}
        return self._transform(self.frame.iloc[idx.numpy()], train=self.train)


# ---------------------------------------------------------------------- metrics
def validate(model, featurizer, taxonomy, frame, config, *, device, batch_size=256, amp=None,
             channels_last=False) -> dict:
    """Decode the model's predictions on ``frame`` and score them (``hierarchy.metrics.evaluate`` keys)."""
    from models.evaluate import score_decoded
    from models.predictor import decoder_for, infer_proba

    was_training = model.training
    model.eval()
    try:
        prob, _ = infer_proba(model, featurizer, frame, batch_size=batch_size, device=device, amp=amp,
                              channels_last=channels_last)
    finally:
        model.train(was_training)
    decoded = decoder_for(taxonomy, config).decode(prob)
    return score_decoded(taxonomy, frame, decoded)


# ---------------------------------------------------------------------- the loop
def _config_key(config: Mapping[str, Any]) -> str:
    """Hash of the config less ``train``/``decode``/``bundle`` (what a resumed run must share)."""
    body = {k: v for k, v in config.items() if k not in ("train", "decode", "bundle")}
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _param_groups(model, settings: Mapping[str, Any]) -> list[dict]:
    """AdamW groups by (kind, decay): kind 0 = ordinary, 1 = image backbone (``backbone_lr_mult``),
    2 = embedding tables and the head's linear ``wide`` path (``embedding_lr_mult``). A table row is
    updated only in the batches that hold its token / n-gram / id, so most rows of a large hashed
    table see few, Adam-sized (~lr) steps: the tables and the linear model on them learn best at a
    higher rate than the deep layers, which overfit at it (fastText trains its bag at 5-10x)."""
    import torch

    lr, wd = float(settings["lr"]), float(settings["weight_decay"])
    mults = {0: 1.0, 1: float(settings["backbone_lr_mult"]), 2: float(settings.get("embedding_lr_mult") or 1.0)}
    tables = {id(m.weight) for m in model.modules() if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))}
    buckets: dict[tuple[int, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kind = 1 if ".backbone." in f".{name}." else 2 if id(p) in tables or ".wide." in f".{name}." else 0
        decay = p.dim() > 1
        buckets.setdefault((kind, decay), []).append(p)
    groups = []
    for (kind, decay), params in sorted(buckets.items()):
        groups.append({
            "params": params,
            "lr": lr * mults[kind],
            "weight_decay": wd if decay else 0.0,
            "base_lr": lr * mults[kind],
        })
    return groups


def _lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_max(value: float) -> float:
    """MAX over ranks (identity when not distributed)."""
    import torch
    import torch.distributed as dist

    if _dist_info()[1] == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _broadcast(values: Sequence[float]) -> list[float]:
    """Rank 0's ``values`` on every rank."""
    import torch
    import torch.distributed as dist

    if _dist_info()[1] == 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64)
    dist.broadcast(t, src=0)
    return t.tolist()


def _check_same_vocab(vocab: Sequence[str]) -> None:
    import torch
    import torch.distributed as dist

    if _dist_info()[1] == 1:
        return
    h = int(hashlib.sha256("\n".join(vocab).encode()).hexdigest()[:12], 16)
    t = torch.tensor([h, -h], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != h or int(-t[1]) != h:
        raise RuntimeError("ranks fitted different vocabularies or n-gram keys (is Featurizer.fit deterministic?)")


def _concat_frames(frames) -> Any:
    import pandas as pd

    if isinstance(frames, pd.DataFrame):
        return frames.reset_index(drop=True)
    frames = list(frames)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


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

    ``config``: a parsed ``conf/model/*.yaml``; ``epochs``/``seed`` override ``train.epochs`` /
    ``train.seed``. ``val_frames``: an explicit validation set (default: an uploader-grouped split of
    ``train_frames``). ``max_minutes``: wall-clock budget; when spent the run stops after the
    current optimizer step, checkpoints, and still writes the bundle. ``device``: 'cpu', 'cuda',
    'cuda:N' or None (CUDA when available; under DDP the local rank's GPU). ``featurizer``: a fitted
    featurizer to reuse (benches); default: fitted here. ``init_weights``: a (partial) state dict to
    start from (warm start, e.g. fine-tuning after a frozen-backbone run); shapes must match.
    Returns a :class:`TrainResult`.
    """
    import torch
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from models.bundle import ngram_keys_in_file, read_vocab, save_bundle, state_dict_tensors, write_vocab
    from models.data import check_labels, validation_split
    from models.factory import create_model, profile_enabled, resolve_config
    from models.featurize import Featurizer
    from models.predictor import autocast_dtype, batch_to_device, resolve_device
    from models.profiles import ProfileTable, leakage_free_profiles, with_profiles
    from models.provenance import data_ids

    t_start = time.monotonic()
    config = resolve_config({k: v for k, v in dict(config).items()
                             if k not in ("bundle", "preprocessing", "profiles")})
    settings = train_settings(config)
    if epochs is not None:
        settings["epochs"] = int(epochs)
    seed = int(settings["seed"] if seed is None else seed)
    settings["seed"] = seed
    config["train"] = {**dict(config.get("train") or {}), "seed": seed, "epochs": int(settings["epochs"])}
    rank, world = _dist_info()
    is_main = rank == 0
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    if is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)

    # --- device
    if world > 1 and device is None:
        local = int(os.environ.get("LOCAL_RANK", rank))
        dev = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is None:  # plain "cuda": the current device, named so AMP/DDP see one index
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    amp_dtype = autocast_dtype(dev, settings["amp"])
    channels_last = dev.type == "cuda" and bool(settings["channels_last"])

    # --- resume state
    state: dict[str, Any] = {}
    if resume and (ckpt_dir / "state.json").is_file():
        state = json.loads((ckpt_dir / "state.json").read_text(encoding="utf-8"))
        if state.get("taxonomy_version") != taxonomy.version:
            raise ValueError(
                f"cannot resume from {ckpt_dir}: it was trained on taxonomy {state.get('taxonomy_version')}, "
                f"this run uses {taxonomy.version}"
            )
        if state.get("config_key") != _config_key(config):
            raise ValueError(f"cannot resume from {ckpt_dir}: the model config changed since the checkpoint")
        if int(state.get("seed", seed)) != seed:
            raise ValueError(f"cannot resume from {ckpt_dir}: it used seed {state.get('seed')}, not {seed}")
    elif resume:
        log.warning("resume: no checkpoint in %s, starting from scratch", ckpt_dir)

    seed_everything(seed)

    # --- data
    frame = check_labels(_concat_frames(train_frames), taxonomy)
    warn_if_coverless(frame, config)
    if val_frames is not None:
        train_df, val_df = frame, check_labels(_concat_frames(val_frames), taxonomy)
    else:
        tr_idx, va_idx = validation_split(frame, float(settings["val_fraction"]), seed, str(settings["val_split"]))
        train_df = frame.iloc[tr_idx].reset_index(drop=True)
        val_df = frame.iloc[va_idx].reset_index(drop=True)
    if len(train_df) == 0:
        raise ValueError("no training rows (after dropping rows without a known primary label)")

    if featurizer is None:
        if state and (ckpt_dir / "vocab.txt").is_file():
            keys = ngram_keys_in_file(ckpt_dir / "model.safetensors")  # the weights are loaded further down
            featurizer = Featurizer(taxonomy, config, read_vocab(ckpt_dir / "vocab.txt"), ngram_keys=keys)
        else:
            featurizer = Featurizer.fit(taxonomy, config, train_df)
    keys = featurizer.ngram_keys
    _check_same_vocab(list(featurizer.vocab) + ([] if keys is None else [" ".join(map(str, keys.tolist()))]))
    if is_main:
        write_vocab(ckpt_dir / "vocab.txt", list(featurizer.vocab))

    if profile_enabled(config):  # leakage-free training profiles; validation sees the training side's
        pcfg = config["context"]["profile"]
        train_df = with_profiles(train_df, *leakage_free_profiles(train_df, taxonomy, str(pcfg["train_mode"])))
        featurizer.profiles = ProfileTable.from_labels(train_df, taxonomy)
    targets = featurizer.targets(train_df).to(torch.int8)  # [n_train, n_nodes]: 1 / 0 / -1 unknown
    source = FeatureSource(
        featurizer, train_df, cache=settings["cache_features"], limit_mb=settings["cache_limit_mb"],
        train=bool(settings["augment"]),
    )

    # --- model / optimizer
    seed_everything(seed)
    model = create_model(config, taxonomy, featurizer)
    if init_weights is not None and not state:
        missing, unexpected = model.load_state_dict(dict(init_weights), strict=False)
        if unexpected:
            raise ValueError(f"init_weights has keys the model lacks: {list(unexpected)[:5]}")
        log.info("warm start: %d tensors loaded, %d kept from init", len(init_weights), len(missing))
    if getattr(model, "tfidf_wide", None) is not None and model.tfidf_wide.fitted and not state \
            and init_weights is None:
        _fit_svm_wide(model, featurizer, taxonomy, train_df, val_df, seed)
    model = model.to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    raw_model = model
    ema = WeightAverage(raw_model, float(settings.get("ema_epochs") or 0.0))
    optimizer = torch.optim.AdamW(_param_groups(raw_model, settings), lr=float(settings["lr"]))
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(raw_model, device_ids=[dev.index] if dev.type == "cuda" else None,
                    find_unused_parameters=bool(settings.get("find_unused_parameters", False)))

    batch_size = int(settings["batch_size"])
    accum = max(1, int(settings["grad_accum"]))
    n_train = len(train_df)
    per_rank = math.ceil(n_train / world)
    micro_per_epoch = math.ceil(per_rank / batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / accum)
    n_epochs = int(settings["epochs"])
    total_steps = steps_per_epoch * n_epochs
    warmup = settings["warmup_steps"]
    warmup = min(200, int(0.05 * total_steps)) if warmup is None else int(warmup)
    metric_name = str(settings["early_stop_metric"])
    if metric_name not in ("hf1", "leaf_acc", "auprc", "hf1_macro"):
        raise ValueError(f"train.early_stop_metric must be hf1, leaf_acc, auprc or hf1_macro, got {metric_name!r}")
    patience = int(settings["patience"])
    min_epochs = min(max(1, int(settings.get("min_epochs") or 1)), n_epochs)
    ema.set_horizon(steps_per_epoch)

    start_epoch, start_micro, step = 0, 0, 0
    best, best_epoch, bad_epochs = -math.inf, 0, 0
    history: list[dict] = []
    if state:
        start_epoch = int(state["epoch"])
        start_micro = int(state.get("micro_in_epoch", 0))
        step = int(state["step"])
        best = float(state["best"]) if state.get("best") is not None else -math.inf
        best_epoch = int(state.get("best_epoch", 0))
        bad_epochs = int(state.get("bad_epochs", 0))
        history = list(state.get("history", []))
        raw_model.load_state_dict(load_file(str(ckpt_dir / "model.safetensors")))
        ema.load(ckpt_dir / "ema.safetensors", raw_model, step)
        opt_t = load_file(str(ckpt_dir / "optimizer.safetensors"))
        optimizer_from_tensors(optimizer, {k: v for k, v in opt_t.items() if k.startswith("state.")}, state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state.get("rng", {}), {k: v for k, v in opt_t.items() if k.startswith("rng.")})
        log.info("resumed from %s at epoch %d (batch %d), step %d", ckpt_dir, start_epoch, start_micro, step)

    budget_s = None if max_minutes is None else float(max_minutes) * 60.0
    stopped = "epochs"
    if state.get("stopped") == "early_stop":
        stopped = "early_stop"
        start_epoch = n_epochs  # nothing left to do

    def save_checkpoint(epoch_next: int, micro_next: int, reason: str) -> None:
        if not is_main:
            return
        rng_js, rng_t = _rng_state()
        opt_t, opt_meta = optimizer_to_tensors(optimizer)
        tmp = ckpt_dir / ".tmp"
        tmp.mkdir(exist_ok=True)
        save_file(state_dict_tensors(raw_model), str(tmp / "model.safetensors"))
        save_file({**opt_t, **rng_t}, str(tmp / "optimizer.safetensors"))
        names = ["model.safetensors", "optimizer.safetensors", "state.json"]
        if ema.model is not None:
            save_file(state_dict_tensors(ema.model), str(tmp / "ema.safetensors"))
            names.append("ema.safetensors")
        st = {
            "epoch": epoch_next,
            "micro_in_epoch": micro_next,
            "step": step,
            "best": None if best == -math.inf else best,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "metric": metric_name,
            "history": history,
            "optimizer": opt_meta,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_js,
            "seed": seed,
            "taxonomy_version": taxonomy.version,
            "config_key": _config_key(config),
            "train_rows": n_train,
            "world_size": world,
            "stopped": reason,
            "saved_at": time.time(),
        }
        (tmp / "state.json").write_text(json.dumps(st, indent=1), encoding="utf-8")
        for name in names:
            os.replace(tmp / name, ckpt_dir / name)
        tmp.rmdir()

    def run_validation(epoch: int, train_loss: float, partial: bool = False, final: bool = False) -> bool:
        """Validate on rank 0, update best/patience; returns the (broadcast) early-stop decision.
        ``partial``: the time budget cut the epoch short (the row is marked; a resumed run adds the
        epoch's full row later). ``final``: the run stops after this validation (time budget), so
        its weights may be kept even before ``min_epochs``."""
        nonlocal best, best_epoch, bad_epochs
        stop = 0.0
        if is_main:
            row = {"epoch": epoch + 1, "step": step, "train_loss": round(train_loss, 6),
                   "seconds": round(time.monotonic() - t_start, 2)}
            if partial:
                row["partial"] = True
            scored = ema.model if ema.model is not None else raw_model
            if len(val_df):
                m = validate(scored, featurizer, taxonomy, val_df, config, device=dev,
                             batch_size=int(settings["eval_batch_size"]), amp=settings["amp"],
                             channels_last=channels_last)
                row.update({k: v for k, v in m.items() if isinstance(v, (int, float))})
                value = float(m[metric_name])
                if epoch + 1 < min_epochs and not final:
                    pass  # too early to be kept (see TRAIN_DEFAULTS["min_epochs"]); recorded only
                elif value > best:
                    best, best_epoch, bad_epochs = value, epoch + 1, 0
                    save_file(state_dict_tensors(scored), str(ckpt_dir / "best.safetensors"))
                else:
                    bad_epochs += 1
                    stop = float(bad_epochs >= patience)
            else:
                best_epoch = epoch + 1
                save_file(state_dict_tensors(scored), str(ckpt_dir / "best.safetensors"))
            history.append(row)
            if progress:
                shown = " ".join(f"{k}={row[k]:.4f}" for k in ("leaf_acc", "level1_acc", "hf1", "auprc", "violations")
                                 if k in row)
                tqdm.write(f"epoch {epoch + 1}/{n_epochs} loss={train_loss:.4f} {shown}"
                           + (f" (best {metric_name}={best:.4f} @ {best_epoch})" if best > -math.inf else ""))
        return bool(_broadcast([stop])[0])

    model.train()
    epoch = start_epoch
    epochs_run = 0
    time_up = False
    for epoch in range(start_epoch, n_epochs):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n_train, generator=g)
        if world > 1:  # pad to a multiple of world, then an equal shard per rank
            pad = per_rank * world - n_train
            perm = torch.cat([perm, perm[:pad]])[rank::world]
        first = start_micro if epoch == start_epoch else 0
        bar = tqdm(total=micro_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{n_epochs}",
                   disable=not (progress and is_main), leave=False, dynamic_ncols=True)
        loss_sum, loss_n = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        micro = first
        for micro in range(first, micro_per_epoch):
            idx = perm[micro * batch_size : (micro + 1) * batch_size]
            batch = batch_to_device(source.batch(idx), dev, channels_last)
            tgt = targets.index_select(0, idx).to(dev, dtype=torch.float32)
            last_in_group = (micro + 1) % accum == 0 or micro + 1 == micro_per_epoch
            sync = contextlib.nullcontext() if (world == 1 or last_in_group) else model.no_sync()
            with sync:
                ctx = torch.autocast(device_type="cuda", dtype=amp_dtype) if amp_dtype is not None \
                    else contextlib.nullcontext()
                with ctx:
                    outputs = model(batch)
                    loss = raw_model.loss(outputs, tgt)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch + 1}, batch {micro}")
                scaled = loss / accum
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            loss_sum += float(loss.detach())
            loss_n += 1
            if last_in_group:
                factor = _lr_factor(step, total_steps, warmup, float(settings["min_lr_ratio"]))
                for grp in optimizer.param_groups:
                    grp["lr"] = grp["base_lr"] * factor
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if settings["clip_grad_norm"]:
                    torch.nn.utils.clip_grad_norm_(raw_model.parameters(), float(settings["clip_grad_norm"]))
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                ema.update(raw_model)
                step += 1
                if budget_s is not None:
                    over = float(time.monotonic() - t_start > budget_s) if is_main else 0.0
                    time_up = bool(_all_max(over))
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            if time_up:
                break
        bar.close()
        epochs_run += 1
        train_loss = loss_sum / max(1, loss_n)
        if time_up:
            done_epoch = micro + 1 >= micro_per_epoch
            run_validation(epoch, train_loss, partial=not done_epoch, final=True)
            save_checkpoint(epoch + 1 if done_epoch else epoch, 0 if done_epoch else micro + 1, "time_budget")
            stopped = "time_budget"
            break
        stop = run_validation(epoch, train_loss)
        if stop:
            stopped = "early_stop"
            save_checkpoint(epoch + 1, 0, "early_stop")
            break
        save_checkpoint(epoch + 1, 0, "epoch")

    seconds = time.monotonic() - t_start
    result = TrainResult(
        bundle_dir=None, model_version=None, metrics={}, history=history, epochs_run=epochs_run,
        best_epoch=best_epoch, steps=step, seconds=round(seconds, 2), stopped=stopped,
        train_rows=n_train, val_rows=len(val_df), rank=rank, world_size=world,
    )
    if not is_main:
        return result
    raw_model.eval()
    result.model, result.featurizer = raw_model, featurizer
    # --- best weights -> bundle
    if (ckpt_dir / "best.safetensors").is_file():
        raw_model.load_state_dict(load_file(str(ckpt_dir / "best.safetensors")))
    best_row = next((h for h in reversed(history) if h["epoch"] == best_epoch), history[-1] if history else {})
    metrics = {k: v for k, v in best_row.items() if k not in ("epoch", "step", "train_loss", "seconds", "partial")}
    result.metrics = metrics
    if getattr(raw_model, "tfidf_wide", None) is not None and raw_model.tfidf_wide.mix and len(val_df):
        metrics["tfidf_mix"] = _mix_svm(raw_model, featurizer, taxonomy, val_df, config, dev, settings,
                                        channels_last, metric_name)
    if str((config.get("decode") or {}).get("stop_threshold")) == "auto":
        config["decode"] = {**config["decode"], "stop_threshold": _auto_stop(raw_model, featurizer, taxonomy, val_df,
                                                                             config, dev, settings, channels_last)}
        metrics["stop_threshold"] = config["decode"]["stop_threshold"]
    if profile_enabled(config):  # the bundle carries the profiles of all its labeled rows
        featurizer.profiles = ProfileTable.from_labels(frame, taxonomy)
    if write_bundle:
        dts = sorted({str(d) for d in frame["dt"].dropna().unique()}) if "dt" in frame.columns else []
        info = {
            **dict(data_desc or {}),
            "dates": f"{dts[0]} .. {dts[-1]} ({len(dts)} days)" if dts else "-",
            "rows": len(frame),
            "train_rows": n_train,
            "val_rows": len(val_df),
            "uploaders": int(frame["uploader_id"].nunique()),
            "epochs": len(history),
            "best_epoch": best_epoch,
            "steps": step,
            "seconds": round(seconds, 1),
            "seed": seed,
            "device": str(dev) + (f" x{world}" if world > 1 else ""),
            "stopped": stopped,
            "ids": data_ids(train_df, val_df),  # models/provenance.py: vtag evaluate's overlap check
        }
        meta = save_bundle(
            out_dir, config=config, taxonomy=taxonomy, featurizer=featurizer, model=raw_model,
            metrics={"validation": metrics, "early_stop_metric": metric_name, "best_epoch": best_epoch,
                     "history": history},
            label=label, train_info=info,
        )
        result.bundle_dir = str(out_dir)
        result.model_version = meta.model_version
    return result


def _fit_svm_wide(model, featurizer, taxonomy, train_df, val_df, seed: int) -> None:
    """``head.tfidf_wide: svm``: fit the TF-IDF linear SVM (C on the validation rows), frozen
    before the deep part trains (:func:`models.sparse_wide.fit_linear_svm`)."""
    import numpy as np
    import scipy.sparse as sp

    from models.sparse_wide import fit_linear_svm

    module = model.tfidf_wide
    leaf_pos = {int(j): k for k, j in enumerate(taxonomy.leaf_indices)}

    def xy(frame):
        if len(frame) == 0:
            return None, None
        parts = [module.features(featurizer.transform(frame.iloc[i:i + 2048])["bow_ids"])
                 for i in range(0, len(frame), 2048)]
        y = np.array([leaf_pos.get(int(j), -1) for j in featurizer.primary_leaf(frame).numpy()])
        return sp.vstack(parts).tocsr(), y

    t0 = time.monotonic()
    x_tr, y_tr = xy(train_df)
    x_va, y_va = xy(val_df)
    info = fit_linear_svm(module, x_tr, y_tr, x_va, y_va, seed=seed)
    log.info("tfidf_wide svm: C=%s validation acc %s, %d classes, %.1fs", info["C"], info["val_acc"],
             info["classes"], time.monotonic() - t0)


def _mix_svm(model, featurizer, taxonomy, val_df, config, dev, settings, channels_last, metric_name) -> dict:
    """``head.tfidf_wide: mix``: the SVM margins' weight in the trained model's logits, chosen on
    the validation rows by the early-stopping metric (:func:`models.sparse_wide.choose_mix_scale`)."""
    from models.sparse_wide import choose_mix_scale

    def score() -> float:
        return float(validate(model, featurizer, taxonomy, val_df, config, device=dev,
                              batch_size=int(settings["eval_batch_size"]), amp=settings["amp"],
                              channels_last=channels_last)[metric_name])

    info = choose_mix_scale(model.tfidf_wide, score)
    log.info("tfidf_wide mix: scale %s on validation (%s: %s)", info["scale"], metric_name,
             {k: round(v, 4) for k, v in info["scores"].items()})
    return {"scale": info["scale"], "validation": {str(k): v for k, v in info["scores"].items()}}


def warn_if_coverless(frame, config: Mapping[str, Any]) -> bool:
    """Warn (log + ``UserWarning``) when the config expects covers and no row has one: the image
    branch would train on blank images only, at the cost of most of the run's time. Returns True
    when it warned."""
    import warnings

    if "image" not in config["modalities"] or len(frame) == 0:
        return False
    has = [c for c in ("cover", "cover_uri") if c in frame.columns]
    if any(frame[c].notna().any() for c in has):
        return False
    msg = (f"every training row lacks a cover, but model config {config.get('name')!r} expects images: the image "
           "branch learns nothing and costs most of the training time. Use conf/model/text-context.yaml "
           "(no image modality) for data without covers.")
    log.warning(msg)
    warnings.warn(msg, UserWarning, stacklevel=3)
    return True


def _auto_stop(model, featurizer, taxonomy, val_df, config, dev, settings, channels_last) -> float | None:
    """``decode.stop_threshold: auto`` resolved on the validation rows (see
    :func:`models.evaluate.choose_stop_threshold`); None without validation rows."""
    from models.evaluate import choose_stop_threshold
    from models.predictor import infer_proba

    if len(val_df) == 0:
        return None
    model.eval()
    prob, _ = infer_proba(model, featurizer, val_df, batch_size=int(settings["eval_batch_size"]), device=dev,
                          amp=settings["amp"], channels_last=channels_last)
    thr = choose_stop_threshold(taxonomy, val_df, prob, config)
    log.info("decode.stop_threshold auto -> %s (validation)", thr)
    return thr


# ---------------------------------------------------------------------- CLI
def load_model_config(path: str | Path) -> dict:
    """Parse a ``conf/model/*.yaml`` (plain YAML mapping)."""
    import yaml

    cfg = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a model config must be a YAML mapping")
    return cfg


def default_taxonomy_path(config: Mapping[str, Any]) -> Path:
    """``config['taxonomy']`` if set, else ``conf/taxonomy/demo-v1.yaml`` of this repository."""
    if config.get("taxonomy"):
        return Path(str(config["taxonomy"]))
    return Path(__file__).resolve().parents[1] / "conf" / "taxonomy" / "demo-v1.yaml"


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a vtag model on labeled dumps and write a model bundle.")
    p.add_argument("--config", required=True, help="model config, e.g. conf/model/cpu-small.yaml")
    p.add_argument("--data", required=True, help="labeled dump root(s), comma-separated (dt=*/ Parquet or JSONL)")
    p.add_argument("--out", required=True, help="bundle directory to write (checkpoints go to OUT/checkpoint)")
    p.add_argument("--taxonomy", help="taxonomy file (default: config 'taxonomy' or conf/taxonomy/demo-v1.yaml)")
    p.add_argument("--val-data", help="explicit validation dump root(s) (default: uploader-grouped split)")
    p.add_argument("--max-minutes", type=float, help="wall-clock budget; the bundle is still written")
    p.add_argument("--seed", type=int, help="random seed (default: train.seed or 0)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--label", default="", help="human label stored beside the model version")
    p.add_argument("--limit", type=int, help="use only the first N rows (smoke runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--processes", type=int, default=1,
                   help="N > 1: DDP over N processes with Spark's TorchDistributor (models/distributed.py)")
    p.add_argument("--cluster", action="store_true", help="with --processes: run on Spark executors, not locally")
    p.add_argument("--use-gpu", action="store_true", help="with --processes: one GPU per process")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def main(args: argparse.Namespace) -> int:
    import torch

    from hierarchy.taxonomy import Taxonomy
    from models.data import read_dumps

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.processes > 1:
        if args.val_data:
            raise SystemExit("--val-data is not supported with --processes")
        from models.distributed import run_distributed

        res = run_distributed(
            args.config, args.data, args.out, num_processes=args.processes, local_mode=not args.cluster,
            use_gpu=args.use_gpu, taxonomy=args.taxonomy, max_minutes=args.max_minutes, seed=args.seed,
            epochs=args.epochs, resume=args.resume, threads=args.threads, label=args.label or Path(args.config).stem,
            limit=args.limit, progress=not args.no_progress,
        )
        print(json.dumps(res, ensure_ascii=False, indent=2, default=str) if args.json else
              f"bundle {res['bundle_dir']} model_version={res['model_version']} stopped={res['stopped']} "
              f"processes={res['world_size']}")
        return 0
    if args.threads:
        torch.set_num_threads(int(args.threads))
    config = load_model_config(args.config)
    taxonomy = Taxonomy.load(args.taxonomy or default_taxonomy_path(config))
    frame = read_dumps(args.data, limit=args.limit)
    val = read_dumps(args.val_data) if args.val_data else None
    result = train(
        config, taxonomy, frame, args.out, max_minutes=args.max_minutes, seed=args.seed, device=args.device,
        resume=args.resume, progress=not args.no_progress, epochs=args.epochs, val_frames=val,
        label=args.label or Path(args.config).stem, data_desc={"data": args.data, "config": str(args.config)},
    )
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2, default=str))
    else:
        m = result.metrics
        print(f"bundle {result.bundle_dir} model_version={result.model_version} stopped={result.stopped} "
              f"epochs={result.epochs_run} steps={result.steps} {result.seconds:.0f}s")
        print("validation: " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in m.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(_arg_parser().parse_args()))
