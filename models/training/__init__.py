"""Model training as a small package (timm's ``train.py`` over ``timm/utils`` is the pattern):

- :mod:`.run` — :func:`train`, the one entry point, and :class:`TrainResult`;
- :mod:`.loop` — one epoch of optimizer steps (:class:`EpochRunner`), validation and early
  stopping (:class:`Validation`), :func:`validate`;
- :mod:`.checkpoint` — checkpoint / resume of a :class:`LoopState`;
- :mod:`.ema` — :class:`WeightAverage`; :mod:`.schedule` — AdamW groups, warm-up + cosine;
- :mod:`.state` — seeding, RNG and optimizer state as tensors; :mod:`.ddp` — DDP helpers;
- :mod:`.features` — training rows as model inputs; :mod:`.post` — the steps that read the
  validation rows around the loop (coverless warning, TF-IDF SVM fit and mix, stop threshold);
- :mod:`.settings` — the ``train:`` section, its defaults and checks.

The ``vtag train`` command line is :mod:`vtag.models.train`.
"""

from vtag.models.training.checkpoint import LoopState
from vtag.models.training.ema import WeightAverage
from vtag.models.training.loop import EpochRunner, Validation, validate
from vtag.models.training.post import warn_if_coverless
from vtag.models.training.run import TrainResult, train
from vtag.models.training.settings import (
    CHECKPOINT_DIR,
    TRAIN_DEFAULTS,
    default_taxonomy_path,
    load_model_config,
    train_settings,
)

__all__ = [
    "CHECKPOINT_DIR", "EpochRunner", "LoopState", "TRAIN_DEFAULTS", "TrainResult", "Validation", "WeightAverage",
    "default_taxonomy_path", "load_model_config", "train", "train_settings", "validate", "warn_if_coverless",
]
