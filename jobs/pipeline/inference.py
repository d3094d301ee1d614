"""Model inference inside Spark: ``Predictor`` loaded once per Python worker, run by ``mapInArrow``.

The worker-side cache is a module global: Spark reuses Python workers across tasks
(``spark.python.worker.reuse``), so a bundle is loaded once per worker process and device. The
device comes from the task's resources (``TaskContext.resources()["gpu"]``) when Spark scheduled
a GPU for it and torch sees CUDA; otherwise the CPU, with torch threads = the task's CPUs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pyarrow as pa

from vtag.models.schema import PREDICTION_SCHEMA, PROFILE_INPUT_FIELDS

_PREDICTORS: dict[tuple, object] = {}

#: input columns the model reads (the job selects exactly these before inference)
MODEL_INPUT_COLUMNS = (
    "video_id",
    "title",
    "description",
    "cover",
    "uploader_id",
    "source_program",
    "duration_s",
    "upload_ts",
)
#: the uploader-profile columns the tag job adds to the input when ``profiles.enabled`` (vtag.jobs.pipeline.profiles)
PROFILE_INPUT_COLUMNS = tuple(f.name for f in PROFILE_INPUT_FIELDS)


def task_device() -> tuple[str, int]:
    """(device, torch threads) for the current Spark task, or for a plain process."""
    import torch
    from pyspark import TaskContext

    ctx = TaskContext.get()
    threads = max(1, int(ctx.cpus())) if ctx is not None else max(1, os.cpu_count() or 1)
    if ctx is not None and torch.cuda.is_available():
        gpu = ctx.resources().get("gpu")
        if gpu is not None and gpu.addresses:
            return f"cuda:{gpu.addresses[0]}", threads
    if ctx is None and torch.cuda.is_available():
        return "cuda", threads
    return "cpu", threads


def get_predictor(bundle: str, expected_version: str | None, allow_mismatch: bool, load_log: str | None = None):
    """The worker's cached ``Predictor`` for ``bundle`` on this task's device (loaded on first use).

    ``load_log``: a directory; each actual load writes a file named after the process id there
    (tests count them to prove one load per worker).
    """
    import torch

    from vtag.models.predictor import Predictor

    device, threads = task_device()
    if device == "cpu":
        torch.set_num_threads(threads)
    key = (bundle, device, expected_version, allow_mismatch)
    pred = _PREDICTORS.get(key)
    if pred is None:
        pred = Predictor.load(
            bundle, device=device, expected_taxonomy_version=expected_version, allow_taxonomy_mismatch=allow_mismatch
        )
        _PREDICTORS[key] = pred
        if load_log:
            os.makedirs(load_log, exist_ok=True)
            with open(os.path.join(load_log, f"load-{os.getpid()}-{time.time_ns()}"), "w") as fh:
                fh.write(f"{bundle}\t{device}\n")
    return pred


def log_input(batch: pa.RecordBatch, input_log: str) -> None:
    """Write ``batch``'s ids and profile columns to a new Parquet file under ``input_log`` (tests read
    them to see what the model was given).

    Parameters
    ----------
    batch : pyarrow.RecordBatch
        One ``mapInArrow`` input batch.
    input_log : str
        A directory (created when absent).
    """
    import pyarrow.parquet as pq

    os.makedirs(input_log, exist_ok=True)
    keep = [c for c in ("video_id", "uploader_id", *PROFILE_INPUT_COLUMNS) if c in batch.schema.names]
    name = os.path.join(input_log, f"batch-{os.getpid()}-{time.time_ns()}.parquet")
    pq.write_table(pa.Table.from_batches([batch.select(keep)]), name)


def predict_fn(
    bundle: str,
    expected_version: str | None,
    allow_mismatch: bool = False,
    load_log: str | None = None,
    input_log: str | None = None,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A ``mapInArrow`` function: record batches of MODEL_INPUT_COLUMNS (plus PROFILE_INPUT_COLUMNS when
    the job joined profiles; the Predictor reads what it knows by name) -> PREDICTION_SCHEMA batches.
    ``input_log``: see :func:`log_input`."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        pred = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if input_log:
                log_input(batch, input_log)
            if pred is None:
                pred = get_predictor(bundle, expected_version, allow_mismatch, load_log)
            frame = batch.to_pandas()
            out = pred.predict(frame)
            table = pa.Table.from_pandas(out, schema=PREDICTION_SCHEMA, preserve_index=False)
            yield from table.to_batches()

    return run
