"""The test suite's data builders: plain functions, no pytest fixtures (those live in
``tests/conftest.py``, and may call these). Import them as ``from tests.builders import ...``.

- **paths**: :data:`REPO_ROOT`, :data:`TEST_DATA` (``tests/data``), :data:`SHARED_DATA`;
- **taxonomies**: :func:`tiny_taxonomy` (``tests/data/tiny-taxonomy.yaml``, cached),
  :func:`load_taxonomies` (the demo taxonomy and a v2 with one more leaf);
- **models**: :data:`TINY_CONFIG` / :func:`tiny_config` (a model that trains in a second or two),
  :func:`tiny_frame` (a toy labeled frame), :func:`tiny_bundle` (the unit tests' bundle, trained once
  per process), :func:`train_cpu_small_bundle` (the tagging jobs' bundle: ``conf/model/cpu-small.yaml``,
  what the ``tiny_bundle`` / ``tiny_bundle_v2`` fixtures train), :func:`tmp_root`;
- **dump days**: :func:`jpeg_bytes`, :func:`dump_rows` (good rows and one row of every bad kind with
  its quarantine reason), :func:`write_dump_day`;
- **warehouses** (the analysts' warehouse, the real `vtag demo`) are built by ``tests/warehouse_builders.py``.

The toy labeled frame itself is :func:`vtag.models.data.toy_labeled_frame` (the benches use it too).
"""

from __future__ import annotations

import atexit
import copy
import io
import os
import shutil
import tempfile
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "tests" / "data"
SHARED_DATA = Path(os.environ.get("VTAG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
UTC = timezone.utc


def tmp_root() -> Path:
    """A fresh temporary directory, removed when the test process exits."""
    path = Path(tempfile.mkdtemp(prefix="vtag-test-"))
    atexit.register(shutil.rmtree, path, True)
    return path


# ------------------------------------------------------------------------------------- taxonomies
@cache
def tiny_taxonomy():
    """The tiny test taxonomy (``tests/data/tiny-taxonomy.yaml``), loaded once per process."""
    from vtag.hierarchy.taxonomy import Taxonomy

    return Taxonomy.load(TEST_DATA / "tiny-taxonomy.yaml")


def load_taxonomies():
    """(v1, v2): the demo taxonomy (or the tiny one) and a v2 with one more leaf beside v1's first leaf."""
    from vtag.hierarchy.taxonomy import Taxonomy

    try:
        tax = Taxonomy.load(REPO_ROOT / "conf" / "taxonomy" / "demo-v1.yaml")
    except Exception:  # the demo taxonomy is written by another part; the tiny one always exists
        tax = tiny_taxonomy()
    data = tax.to_dict()
    data.pop("version", None)
    data["label"] = (tax.label or "taxonomy") + "+1"
    parent = tax.node(tax.leaf_ids[0]).parent

    def add(nodes: list[dict]) -> bool:
        for n in nodes:
            if n["id"] == parent:
                n["children"].append({"id": f"{parent}_vtagnew", "name": "新兴题材"})
                return True
            if add(n.get("children", [])):
                return True
        return False

    assert add(data["nodes"])
    return tax, Taxonomy.from_dict(data, source="<tests v2>")


# ------------------------------------------------------------------------------------- models
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
    """A copy of :data:`TINY_CONFIG` with its ``train`` section updated.

    Parameters
    ----------
    **train
        ``train:`` keys to override (``epochs=1``, ``lr=0.0``, ...).
    """
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["train"].update(train)
    return cfg


@cache
def tiny_frame(n: int = 48, seed: int = 0):
    """A toy labeled frame of the tiny taxonomy (:func:`vtag.models.data.toy_labeled_frame`), cached.

    Parameters
    ----------
    n
        Rows.
    seed
        Random seed of the rows.
    """
    from vtag.models.data import toy_labeled_frame

    return toy_labeled_frame(tiny_taxonomy(), n=n, seed=seed)


@cache
def tiny_bundle():
    """(bundle dir, taxonomy, frame, ``TrainResult``): :func:`tiny_config` trained for one epoch on
    :func:`tiny_frame` (CPU, one torch thread), once per process."""
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


def train_cpu_small_bundle(taxonomy, out: Path, *, rows_seed: int, label: str) -> Path:
    """Train ``conf/model/cpu-small.yaml`` (32 px images, batch 32) for two epochs on 96 toy rows of
    ``taxonomy`` into ``out`` (one torch thread): the bundle the Spark tagging tests run.

    Parameters
    ----------
    taxonomy
        The :class:`vtag.hierarchy.taxonomy.Taxonomy` the bundle tags with.
    out
        The bundle directory to write.
    rows_seed
        Seed of the toy training rows.
    label
        The bundle's label.
    """
    import torch
    import yaml

    from vtag.models.data import toy_labeled_frame
    from vtag.models.training import train

    config = yaml.safe_load((REPO_ROOT / "conf" / "model" / "cpu-small.yaml").read_text(encoding="utf-8"))
    config["image"]["input_size"] = 32
    config.setdefault("train", {}).update({"batch_size": 32})
    frame = toy_labeled_frame(taxonomy, n=96, seed=rows_seed)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster on a shared 2-core machine
    try:
        train(config, taxonomy, frame, out, epochs=2, seed=0, progress=False, label=label)
    finally:
        torch.set_num_threads(before)
    return out


# ------------------------------------------------------------------------------------- dump days
#: the upload time of :func:`dump_rows`' rows
TS = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def jpeg_bytes(color: tuple[int, int, int] = (30, 160, 30), size: tuple[int, int] = (24, 24)) -> bytes:
    """A plain-colored JPEG.

    Parameters
    ----------
    color
        RGB of every pixel.
    size
        (width, height) in pixels.
    """
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def dump_rows(tag: str, n_good: int) -> tuple[list[dict], list[tuple[dict, str]]]:
    """Rows of a hand-made dump day: (``n_good`` good rows, [(bad row, its quarantine reason)]) with one
    bad row of every kind (null id, duplicate id, overlong, two undecodable covers, empty content).

    Parameters
    ----------
    tag
        Prefix of the video ids (``<tag>-<i>``): days built with different tags share no ids.
    n_good
        Good rows (at least 2); every third has no cover.
    """
    good = [
        {"video_id": f"{tag}-{i}", "title": "【王者荣耀】上分 多人竞技" if i % 2 else "家常菜 美食 做法",
         "description": None, "cover": jpeg_bytes() if i % 3 else None, "cover_uri": None,
         "uploader_id": f"u{i % 4}", "source_program": None, "duration_s": 30 + i, "upload_ts": TS}
        for i in range(n_good)
    ]
    bad = [
        ({**good[0], "video_id": None}, "null_video_id"),
        ({**good[0], "upload_ts": datetime(2026, 11, 19, tzinfo=UTC)}, "duplicate_video_id"),
        ({**good[1], "video_id": f"{tag}-big", "title": "长" * 2000}, "overlong"),
        ({**good[1], "video_id": f"{tag}-junk", "cover": b"junk bytes"}, "undecodable_cover"),
        ({**good[1], "video_id": f"{tag}-corrupt", "cover": b"\xff\xd8\xff\xe0" + b"\x00" * 40}, "undecodable_cover"),
        ({**good[1], "video_id": f"{tag}-empty", "title": "", "description": None, "cover": None}, "empty_content"),
    ]
    return good, bad


def write_dump_day(root: Path, dt: str, rows: list[dict]) -> Path:
    """Write ``rows`` as ``<root>/dt=<dt>/part-0.parquet`` (the dump schema, every column nullable)
    with its ``_SUCCESS`` marker; returns the day's directory.

    Parameters
    ----------
    root
        The dump root.
    dt
        The day, ``YYYY-MM-DD``.
    rows
        Dicts with dump columns (missing ones are null).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vtag.models.schema import DUMP_SCHEMA

    day = Path(root) / f"dt={dt}"
    day.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([f.with_nullable(True) for f in DUMP_SCHEMA])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), day / "part-0.parquet")
    (day / "_SUCCESS").write_text("")
    return day
