"""The training loop's two halves: :meth:`EpochRunner.run_epoch` (one pass over the training rows)
and :meth:`Validation.after_epoch` (score, keep the best weights, decide early stopping). Both
update a :class:`~vtag.models.training.checkpoint.LoopState` they are given; neither holds state of the
run beyond its parts."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

from vtag.models.training.checkpoint import LoopState, save_best
from vtag.models.training.ddp import all_max, broadcast
from vtag.models.training.schedule import lr_factor, set_lr


def validate(model, featurizer, taxonomy, frame, config, *, device, batch_size=256, amp=None,
             channels_last=False) -> dict:
    """Decode the model's predictions on ``frame`` and score them (``vtag.hierarchy.metrics.evaluate`` keys).

    Parameters
    ----------
    model : VtagModel
        Scored in eval mode (its mode is restored after).
    featurizer, taxonomy
        The run's featurizer and taxonomy.
    frame : DataFrame
        Labeled rows (``LABELED_SCHEMA`` columns).
    config : mapping
        The model config (its ``decode`` section picks the decoder).
    device, batch_size, amp, channels_last
        As :func:`vtag.models.predictor.infer_proba` takes them.
    """
    from vtag.models.evaluate import score_decoded
    from vtag.models.predictor import decoder_for, infer_proba

    was_training = model.training
    model.eval()
    try:
        prob, _ = infer_proba(model, featurizer, frame, batch_size=batch_size, device=device, amp=amp,
                              channels_last=channels_last)
    finally:
        model.train(was_training)
    decoded = decoder_for(taxonomy, config).decode(prob)
    return score_decoded(taxonomy, frame, decoded)


@dataclass
class EpochResult:
    """``loss``: mean training loss of the micro-batches run; ``micro``: the last one run
    (0-based); ``time_up``: the wall-clock budget ended the epoch early."""

    loss: float
    micro: int
    time_up: bool


@dataclass
class EpochRunner:
    """Runs epochs of optimizer steps over the featurized training rows.

    ``model`` may be the DDP wrapper of ``raw_model``; ``targets [n_train, n_nodes]`` int8
    (1 / 0 / -1 unknown); ``batches_per_epoch`` micro-batches of ``batch_size`` rows per rank;
    ``accum`` micro-batches per optimizer step; ``total_steps`` / ``warmup`` drive the schedule.
    """

    model: Any
    raw_model: Any
    optimizer: Any
    scaler: Any
    ema: Any
    source: Any
    targets: Any
    settings: Mapping[str, Any]
    device: Any
    amp_dtype: Any
    channels_last: bool
    rank: int
    world: int
    batch_size: int
    accum: int
    batches_per_epoch: int
    total_steps: int
    warmup: int
    budget_s: float | None
    t_start: float
    show_progress: bool

    def epoch_order(self, epoch: int, seed: int):
        """``[rows of this rank]`` int64: the epoch's shuffle (``seed`` and ``epoch`` fix it, so a
        resumed run sees the same order), padded and sharded under DDP."""
        import torch

        n = int(self.targets.shape[0])
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        if self.world > 1:
            per_rank = math.ceil(n / self.world)
            perm = torch.cat([perm, perm[: per_rank * self.world - n]])[self.rank :: self.world]
        return perm

    def run_epoch(self, loop: LoopState, epoch: int, first: int, seed: int, n_epochs: int) -> EpochResult:
        """Micro-batches ``first..`` of ``epoch``; ``loop.step`` counts the optimizer steps."""
        from tqdm.auto import tqdm

        perm = self.epoch_order(epoch, seed)
        bar = tqdm(total=self.batches_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{n_epochs}",
                   disable=not self.show_progress, leave=False, dynamic_ncols=True)
        loss_sum, loss_n, micro, time_up = 0.0, 0, first, False
        self.optimizer.zero_grad(set_to_none=True)
        for micro in range(first, self.batches_per_epoch):
            idx = perm[micro * self.batch_size : (micro + 1) * self.batch_size]
            last_in_group = (micro + 1) % self.accum == 0 or micro + 1 == self.batches_per_epoch
            loss_sum += self._forward_backward(idx, last_in_group, epoch, micro)
            loss_n += 1
            if last_in_group:
                self._optimizer_step(loop.step)
                loop.step += 1
                time_up = self._time_up()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
            if time_up:
                break
        bar.close()
        return EpochResult(loss=loss_sum / max(1, loss_n), micro=micro, time_up=time_up)

    def _forward_backward(self, idx, last_in_group: bool, epoch: int, micro: int) -> float:
        import torch

        from vtag.models.predictor import batch_to_device

        batch = batch_to_device(self.source.batch(idx), self.device, self.channels_last)
        tgt = self.targets.index_select(0, idx).to(self.device, dtype=torch.float32)
        sync = contextlib.nullcontext() if (self.world == 1 or last_in_group) else self.model.no_sync()
        with sync:
            amp = torch.autocast(device_type="cuda", dtype=self.amp_dtype) if self.amp_dtype is not None \
                else contextlib.nullcontext()
            with amp:
                loss = self.raw_model.loss(self.model(batch), tgt)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch + 1}, batch {micro}")
            scaled = loss / self.accum
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return float(loss.detach())

    def _optimizer_step(self, step: int) -> None:
        import torch

        set_lr(self.optimizer, lr_factor(step, self.total_steps, self.warmup, float(self.settings["min_lr_ratio"])))
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.settings["clip_grad_norm"]:
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), float(self.settings["clip_grad_norm"]))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.raw_model)

    def _time_up(self) -> bool:
        if self.budget_s is None:
            return False
        over = float(time.monotonic() - self.t_start > self.budget_s) if self.rank == 0 else 0.0
        return bool(all_max(over))


@dataclass
class Validation:
    """Scores the model after an epoch (rank 0), keeps the best weights in the checkpoint folder,
    counts epochs without improvement; ``min_epochs``: earlier epochs are recorded, not kept."""

    featurizer: Any
    taxonomy: Any
    frame: Any
    config: Mapping[str, Any]
    settings: Mapping[str, Any]
    device: Any
    channels_last: bool
    ckpt_dir: Any
    min_epochs: int
    n_epochs: int
    is_main: bool
    show_progress: bool
    t_start: float

    @property
    def metric(self) -> str:
        return str(self.settings["early_stop_metric"])

    def after_epoch(self, loop: LoopState, scored_model, epoch: int, train_loss: float, *,
                    partial: bool = False, final: bool = False) -> bool:
        """Validate ``scored_model`` after ``epoch`` (0-based) and update ``loop``; returns the
        early-stop decision (broadcast to every rank). ``partial``: the time budget cut the epoch
        short (the history row is marked); ``final``: the run ends here, so the weights may be
        kept even before ``min_epochs``."""
        stop = 0.0
        if self.is_main:
            row = {"epoch": epoch + 1, "step": loop.step, "train_loss": round(train_loss, 6),
                   "seconds": round(time.monotonic() - self.t_start, 2)}
            if partial:
                row["partial"] = True
            if len(self.frame):
                stop = self._score(loop, scored_model, epoch, row, final)
            else:
                loop.best_epoch = epoch + 1
                save_best(self.ckpt_dir, scored_model)
            loop.history.append(row)
            self._report(loop, row, train_loss)
        return bool(broadcast([stop])[0])

    def _score(self, loop: LoopState, model, epoch: int, row: dict, final: bool) -> float:
        m = validate(model, self.featurizer, self.taxonomy, self.frame, self.config, device=self.device,
                     batch_size=int(self.settings["eval_batch_size"]), amp=self.settings["amp"],
                     channels_last=self.channels_last)
        row.update({k: v for k, v in m.items() if isinstance(v, (int, float))})
        value = float(m[self.metric])
        if epoch + 1 < self.min_epochs and not final:
            return 0.0  # too early to be kept (TRAIN_DEFAULTS["min_epochs"]); recorded only
        if value > loop.best:
            loop.best, loop.best_epoch, loop.bad_epochs = value, epoch + 1, 0
            save_best(self.ckpt_dir, model)
            return 0.0
        loop.bad_epochs += 1
        return float(loop.bad_epochs >= int(self.settings["patience"]))

    def _report(self, loop: LoopState, row: dict, train_loss: float) -> None:
        if not self.show_progress:
            return
        from tqdm.auto import tqdm

        shown = " ".join(f"{k}={row[k]:.4f}" for k in ("leaf_acc", "level1_acc", "hf1", "auprc", "violations")
                         if k in row)
        best = f" (best {self.metric}={loop.best:.4f} @ {loop.best_epoch})" if loop.best > -math.inf else ""
        tqdm.write(f"epoch {row['epoch']}/{self.n_epochs} loss={train_loss:.4f} {shown}{best}")
