"""Exponential moving average of a model's weights (``train.ema_epochs``)."""

from __future__ import annotations

from pathlib import Path


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
