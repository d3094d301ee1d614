"""Checkpoint and resume: ``<out_dir>/checkpoint/`` holds ``model.safetensors``,
``optimizer.safetensors`` (optimizer state and RNG states as tensors), ``ema.safetensors`` (with
``train.ema_epochs``), ``best.safetensors`` (the best validation weights), ``vocab.txt`` and
``state.json`` (:class:`LoopState`, the optimizer's scalars, the run's identity). Files are written
to ``.tmp/`` and moved in one by one, so a killed save leaves the previous checkpoint readable."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from vtag.models.training.settings import config_key
from vtag.models.training.state import optimizer_from_tensors, optimizer_to_tensors, rng_state, set_rng_state

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """Where a run stands: the next epoch / micro-batch to run (0-based), optimizer steps done,
    the best validation value and its (1-based) epoch, epochs without improvement, the history of
    validation rows, and why the run stopped (``epochs`` | ``early_stop`` | ``time_budget``)."""

    epoch: int = 0
    micro: int = 0
    step: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    stopped: str = "epochs"

    @classmethod
    def from_saved(cls, st: Mapping[str, Any]) -> LoopState:
        return cls(
            epoch=int(st["epoch"]), micro=int(st.get("micro_in_epoch", 0)), step=int(st["step"]),
            best=float(st["best"]) if st.get("best") is not None else -math.inf,
            best_epoch=int(st.get("best_epoch", 0)), bad_epochs=int(st.get("bad_epochs", 0)),
            history=list(st.get("history", [])),
            # an early-stopped run has nothing left to do; any other saved reason continues
            stopped="early_stop" if st.get("stopped") == "early_stop" else "epochs",
        )


def read_resume_state(ckpt_dir: Path, *, taxonomy, config: Mapping[str, Any], seed: int) -> dict:
    """The saved ``state.json`` of ``ckpt_dir`` after checking it belongs to this run (same
    taxonomy version, model config and seed); ``{}`` (with a warning) when there is none.

    Parameters
    ----------
    ckpt_dir : Path
        ``<out_dir>/checkpoint``.
    taxonomy : vtag.hierarchy.taxonomy.Taxonomy
    config : mapping
        The resolved model config of this run.
    seed : int
    """
    path = ckpt_dir / "state.json"
    if not path.is_file():
        log.warning("resume: no checkpoint in %s, starting from scratch", ckpt_dir)
        return {}
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("taxonomy_version") != taxonomy.version:
        raise ValueError(
            f"cannot resume from {ckpt_dir}: it was trained on taxonomy {state.get('taxonomy_version')}, "
            f"this run uses {taxonomy.version}"
        )
    if state.get("config_key") != config_key(config):
        raise ValueError(f"cannot resume from {ckpt_dir}: the model config changed since the checkpoint")
    if int(state.get("seed", seed)) != seed:
        raise ValueError(f"cannot resume from {ckpt_dir}: it used seed {state.get('seed')}, not {seed}")
    return state


def restore(ckpt_dir: Path, saved: Mapping[str, Any], *, model, ema, optimizer, scaler) -> LoopState:
    """Load weights, the weight average, optimizer, grad scaler and RNG states from ``ckpt_dir``;
    returns the saved :class:`LoopState`."""
    from safetensors.torch import load_file

    loop = LoopState.from_saved(saved)
    model.load_state_dict(load_file(str(ckpt_dir / "model.safetensors")))
    ema.load(ckpt_dir / "ema.safetensors", model, loop.step)
    tensors = load_file(str(ckpt_dir / "optimizer.safetensors"))
    optimizer_from_tensors(optimizer, {k: v for k, v in tensors.items() if k.startswith("state.")}, saved["optimizer"])
    if scaler is not None and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved.get("rng", {}), {k: v for k, v in tensors.items() if k.startswith("rng.")})
    log.info("resumed from %s at epoch %d (batch %d), step %d", ckpt_dir, loop.epoch, loop.micro, loop.step)
    return loop


def save_checkpoint(ckpt_dir: Path, loop: LoopState, reason: str, *, model, ema, optimizer, scaler,
                    run: Mapping[str, Any]) -> None:
    """Write the checkpoint of ``loop`` (resume position ``loop.epoch`` / ``loop.micro``).

    Parameters
    ----------
    ckpt_dir : Path
    loop : LoopState
    reason : str
        ``epoch`` | ``early_stop`` | ``time_budget``: why it is saved (a resumed ``early_stop``
        run does nothing more).
    model, ema, optimizer, scaler
        The unwrapped model, its :class:`~vtag.models.training.ema.WeightAverage`, the optimizer and the
        AMP grad scaler (or None).
    run : mapping
        The run's identity saved beside the state: ``metric``, ``seed``, ``taxonomy_version``,
        ``config_key``, ``train_rows``, ``world_size``.
    """
    from safetensors.torch import save_file

    from vtag.models.bundle import state_dict_tensors

    rng_js, rng_t = rng_state()
    opt_t, opt_meta = optimizer_to_tensors(optimizer)
    tmp = ckpt_dir / ".tmp"
    tmp.mkdir(exist_ok=True)
    save_file(state_dict_tensors(model), str(tmp / "model.safetensors"))
    save_file({**opt_t, **rng_t}, str(tmp / "optimizer.safetensors"))
    names = ["model.safetensors", "optimizer.safetensors", "state.json"]
    if ema.model is not None:
        save_file(state_dict_tensors(ema.model), str(tmp / "ema.safetensors"))
        names.append("ema.safetensors")
    st = {
        "epoch": loop.epoch,
        "micro_in_epoch": loop.micro,
        "step": loop.step,
        "best": None if loop.best == -math.inf else loop.best,
        "best_epoch": loop.best_epoch,
        "bad_epochs": loop.bad_epochs,
        "history": loop.history,
        "optimizer": opt_meta,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_js,
        "stopped": reason,
        "saved_at": time.time(),
        **dict(run),
    }
    (tmp / "state.json").write_text(json.dumps(st, indent=1), encoding="utf-8")
    for name in names:
        os.replace(tmp / name, ckpt_dir / name)
    tmp.rmdir()


def save_best(ckpt_dir: Path, model) -> None:
    """``best.safetensors``: the weights the bundle will ship unless a later epoch beats them."""
    from safetensors.torch import save_file

    from vtag.models.bundle import state_dict_tensors

    save_file(state_dict_tensors(model), str(ckpt_dir / "best.safetensors"))
