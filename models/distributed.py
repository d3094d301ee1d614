"""Scale-out training: :func:`vtag.models.training.train` under Spark's ``TorchDistributor`` (DDP).

:func:`run_distributed` (driver side) hands *this file* to
``pyspark.ml.torch.distributor.TorchDistributor(...).run(path, *args)``; torchrun then starts
``num_processes`` copies of it, each of which (:func:`worker_main`) joins the process group (gloo on
CPU, NCCL on GPUs), reads the labeled dump, and calls the same ``train()`` as ``vtag train`` —
which shards every epoch across ranks, validates and writes the bundle on rank 0.

Only command-line strings cross the process boundary (TorchDistributor's file mode): no function
or data is pickled by vtag. pyspark is imported lazily, on the driver only; workers need torch
alone. Every rank reads the whole dump and takes its shard of each epoch's shuffle, which suits
dumps that fit one machine's memory; larger data would need a per-rank reader.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # run as a script by torchrun: sys.path[0] is models/, which would shadow names
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)


def _worker_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="one DDP rank of a vtag training run (started by torchrun)")
    p.add_argument("--config", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--taxonomy")
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--threads", type=int, help="torch threads per rank (default: cores / world size)")
    p.add_argument("--label", default="")
    p.add_argument("--limit", type=int)
    p.add_argument("--dates", help="only these dt partitions of --data (vtag.models.dates.parse_dates)")
    p.add_argument("--val-data", help="explicit validation dump root(s) (vtag train --val-data)")
    p.add_argument("--val-dates", help="only these dt partitions of --val-data")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--backend", help="gloo or nccl (default: nccl with CUDA, else gloo)")
    return p


def worker_main(argv: list[str] | None = None) -> int:
    """Entry point of one rank: join the process group, train, leave. Rank 0 writes the bundle and
    ``<out>/distributed-result.json``."""
    import torch
    import torch.distributed as dist

    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.data import read_dumps
    from vtag.models.training import default_taxonomy_path, load_model_config, train

    args = _worker_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s rank%(process)d %(name)s: %(message)s")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() and args.backend != "gloo"
    backend = args.backend or ("nccl" if use_cuda else "gloo")
    torch.set_num_threads(int(args.threads or max(1, (os.cpu_count() or 1) // max(1, world))))
    dist.init_process_group(backend=backend)
    try:
        rank = dist.get_rank()
        config = load_model_config(args.config)
        taxonomy = Taxonomy.load(args.taxonomy or default_taxonomy_path(config))
        frame = read_dumps(args.data, dates=args.dates, limit=args.limit)
        val = read_dumps(args.val_data, dates=args.val_dates) if args.val_data else None
        device = None if use_cuda else "cpu"
        result = train(
            config, taxonomy, frame, args.out, max_minutes=args.max_minutes, seed=args.seed, device=device,
            resume=args.resume, progress=args.progress and rank == 0, epochs=args.epochs, val_frames=val,
            label=args.label, data_desc={"data": args.data, "config": args.config, "processes": world,
                                                **({"dates_selected": args.dates} if args.dates else {})},
        )
        if rank == 0:
            Path(args.out, "distributed-result.json").write_text(
                json.dumps(result.to_dict(), indent=2, default=str), encoding="utf-8"
            )
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


def _spark_session(num_processes: int):
    """The active SparkSession; else, under spark-submit, the one its ``--master`` and ``--conf`` make;
    else a plain ``local[num_processes]`` one (TorchDistributor needs a session)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("vtag-train")
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # spark-submit sets it for the driver it starts
        builder = builder.master(f"local[{max(1, num_processes)}]")
    return builder.getOrCreate()


def check_gpu_task_amount(spark_conf_value: str | None) -> None:
    """Refuse a cluster GPU run whose ``spark.task.resource.gpu.amount`` is not a whole number ≥ 1.

    ``TorchDistributor`` gives each rank one Spark task and reads that setting as an integer, so a
    fractional share (the tag job's ``conf/jobs/cluster.yaml`` packs 6 tasks on a GPU with 0.166)
    fails deep inside pyspark with a bare ``ValueError``.

    Parameters
    ----------
    spark_conf_value
        The session's ``spark.task.resource.gpu.amount`` (None: unset).
    """
    try:
        whole = float(spark_conf_value or "0")
    except ValueError:
        whole = 0.0
    if whole < 1 or whole != int(whole):
        raise ValueError(f"training on the cluster's GPUs needs spark.task.resource.gpu.amount=1 (one GPU per "
                         f"rank), not {spark_conf_value!r}: spark-submit --conf spark.task.resource.gpu.amount=1")


def run_distributed(
    config: str | Path | Mapping[str, Any],
    data: str,
    out: str | Path,
    *,
    num_processes: int = 2,
    local_mode: bool = True,
    use_gpu: bool = False,
    taxonomy: str | Path | None = None,
    max_minutes: float | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    resume: bool = False,
    threads: int | None = None,
    label: str = "",
    limit: int | None = None,
    progress: bool = False,
    dates: str | None = None,
    val_data: str | None = None,
    val_dates: str | None = None,
) -> dict:
    """Train with ``TorchDistributor(num_processes, local_mode, use_gpu)`` on the active Spark session.

    ``config``: a model config file, or a parsed config (written to ``<out>/distributed-config.yaml``).
    ``data`` must be readable at the same path by every process (local mode: this machine);
    ``dates``: only those dt partitions of it (``vtag train --dates``); ``val_data`` / ``val_dates``:
    an explicit validation dump, read by every rank as ``data`` is (``vtag train --val-data``).
    Returns rank 0's :meth:`TrainResult.to_dict` (from ``<out>/distributed-result.json``).
    """
    import yaml
    from pyspark.ml.torch.distributor import TorchDistributor

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(config, Mapping):
        cfg_path = out / "distributed-config.yaml"
        cfg_path.write_text(yaml.safe_dump(dict(config), allow_unicode=True, sort_keys=False), encoding="utf-8")
    else:
        cfg_path = Path(config).resolve()
    result_file = out / "distributed-result.json"
    if result_file.exists():
        result_file.unlink()
    args = ["--config", str(cfg_path), "--data", str(data), "--out", str(out)]
    for flag, value in (("--taxonomy", taxonomy), ("--max-minutes", max_minutes), ("--seed", seed),
                        ("--epochs", epochs), ("--threads", threads), ("--limit", limit), ("--dates", dates),
                        ("--val-data", val_data), ("--val-dates", val_dates)):
        if value is not None:
            args += [flag, str(Path(value).resolve()) if flag == "--taxonomy" else str(value)]
    if label:
        args += ["--label", label]
    if resume:
        args.append("--resume")
    if progress:
        args.append("--progress")
    if not use_gpu:
        args += ["--backend", "gloo"]
    spark = _spark_session(num_processes)
    if use_gpu and not local_mode:
        check_gpu_task_amount(spark.conf.get("spark.task.resource.gpu.amount", None))
    distributor = TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu)
    distributor.run(str(Path(__file__).resolve()), *args)
    if not result_file.is_file():
        raise RuntimeError(f"distributed training finished without writing {result_file}")
    return json.loads(result_file.read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.exit(worker_main())
