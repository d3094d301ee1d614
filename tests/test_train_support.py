"""Shared helpers for the training / bundle / predictor / evaluate tests (no tests in here).

``tiny_config()`` is a model small enough to train in a second or two; ``tiny_bundle()`` trains it
once per test process on a toy frame (``vtag.models.data.toy_labeled_frame``) and returns the bundle
directory, the taxonomy, the frame and the ``TrainResult``.
"""

from __future__ import annotations

import atexit
import copy
import shutil
import tempfile
from functools import cache
from pathlib import Path

import pytest

TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def torch_one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster than two
    (no OpenMP barriers under oversubscription). Import this fixture into a test module to use it;
    the previous thread count is restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY_CONFIG = {
    "name": "tiny-test",
    "modalities": ["text", "image", "context"],
    "text": {
        "max_tokens": 16,
        "vocab": {"min_count": 1, "max_size": 500},
        "bow": {"buckets": 512, "dim": 16},
        "cnn": {"embed_dim": 16, "widths": [2, 3], "channels": 16, "attn_dim": 16},
    },
    "image": {"backbone": "mobilenetv3_small_050", "input_size": 32, "proj_dim": 16,
              "train_augment": {"scale": [0.8, 1.0], "hflip": 0.5, "color_jitter": 0.0}},
    "context": {"dim": 8, "uploader_buckets": 256, "program_buckets": 64},
    "fusion": {"name": "lmf", "dim": 32, "rank": 2},
    "head": {"name": "dhmcn_v3", "hidden": 32, "local_hidden": 16},
    "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3, "patience": 5, "val_fraction": 0.2},
    "decode": {"thresholds": 0.5, "batch_size": 256},
}


def tiny_config(**train) -> dict:
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["train"].update(train)
    return cfg


def tmp_root() -> Path:
    path = Path(tempfile.mkdtemp(prefix="vtag-train-test-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@cache
def tiny_taxonomy():
    from vtag.hierarchy.taxonomy import Taxonomy

    return Taxonomy.load(TEST_DATA / "tiny-taxonomy.yaml")


@cache
def tiny_frame(n: int = 48, seed: int = 0):
    from vtag.models.data import toy_labeled_frame

    return toy_labeled_frame(tiny_taxonomy(), n=n, seed=seed)


@cache
def tiny_bundle():
    """(bundle dir, taxonomy, frame, TrainResult) — trained once per process (1 epoch, CPU)."""
    import torch

    from vtag.models.training import train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_root() / "bundle"
    try:
        result = train(tiny_config(epochs=1), tiny_taxonomy(), tiny_frame(), out, progress=False, label="tiny")
    finally:
        torch.set_num_threads(before)
    return out, tiny_taxonomy(), tiny_frame(), result
