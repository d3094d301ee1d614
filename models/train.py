"""The ``vtag train`` command line: an argument parser and ``main`` over :func:`vtag.models.training.train`
(the library: :mod:`vtag.models.training`). The names below are re-exported for callers of
``vtag.models.train``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from vtag.models.training import (  # noqa: F401  (re-exported)
    CHECKPOINT_DIR,
    TRAIN_DEFAULTS,
    TrainResult,
    WeightAverage,
    default_taxonomy_path,
    load_model_config,
    train,
    train_settings,
    validate,
    warn_if_coverless,
)


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a vtag model on labeled dumps and write a model bundle.")
    p.add_argument("--config", required=True, help="model config, e.g. conf/model/cpu-small.yaml")
    p.add_argument("--data", required=True, help="labeled dump root(s), comma-separated (dt=*/ Parquet or JSONL)")
    p.add_argument("--out", required=True, help="bundle directory to write (checkpoints go to OUT/checkpoint)")
    p.add_argument("--taxonomy", help="taxonomy file (default: config 'taxonomy' or conf/taxonomy/demo-v1.yaml)")
    p.add_argument("--dates", help="only these dt partitions of --data: days and ranges, comma-separated "
                   "(2023-08-19..2023-10-12, ..2023-10-12, 2023-10-13..): train on the earlier days, "
                   "evaluate on the later ones with vtag evaluate --dates")
    p.add_argument("--val-data", help="explicit validation dump root(s) (default: split off the training data by train.val_split: the latest rows by upload_ts when they have one, else whole uploaders)")
    p.add_argument("--val-dates", help="only these dt partitions of --val-data (as --dates)")
    p.add_argument("--max-minutes", type=float, help="wall-clock budget; the bundle is still written")
    p.add_argument("--seed", type=int, help="random seed (default: train.seed or 0)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--drop-checkpoint", action="store_true",
                   help="delete OUT/checkpoint once the bundle is written (kept when the time budget stopped the "
                        "run, to --resume): a bundle for production needs none, and it is most of the folder")
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


def _drop_checkpoint(args: argparse.Namespace, stopped: str) -> None:
    """``--drop-checkpoint``: remove ``OUT/checkpoint`` (weights, optimizer state, best weights: ~3× the
    bundle's ``model.safetensors``) unless the time budget cut the run short."""
    import shutil

    if args.drop_checkpoint and stopped != "time_budget":
        shutil.rmtree(Path(args.out) / CHECKPOINT_DIR, ignore_errors=True)


def main(args: argparse.Namespace) -> int:
    import torch

    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.data import read_dumps

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.val_dates and not args.val_data:
        raise SystemExit("vtag train: --val-dates selects days of --val-data, which is not given")
    if args.processes > 1:
        from vtag.models.dates import parse_dates

        for flag, value in (("--dates", args.dates), ("--val-dates", args.val_dates)):
            try:  # checked here, not in each rank
                parse_dates(value) if value else None
            except ValueError as e:
                raise SystemExit(f"vtag train: {flag}: {e}") from e
        from vtag.models.distributed import run_distributed

        res = run_distributed(
            args.config, args.data, args.out, num_processes=args.processes, local_mode=not args.cluster,
            use_gpu=args.use_gpu, taxonomy=args.taxonomy, max_minutes=args.max_minutes, seed=args.seed,
            epochs=args.epochs, resume=args.resume, threads=args.threads, label=args.label or Path(args.config).stem,
            limit=args.limit, progress=not args.no_progress, dates=args.dates, val_data=args.val_data,
            val_dates=args.val_dates,
        )
        _drop_checkpoint(args, res["stopped"])
        if args.json:
            print(json.dumps(res, ensure_ascii=False, indent=2, default=str))
        else:
            print(f"bundle {res['bundle_dir']} model_version={res['model_version']} stopped={res['stopped']} "
                  f"processes={res['world_size']}")
            print(validation_summary(res.get("metrics") or {}))
        return 0
    if args.threads:
        torch.set_num_threads(int(args.threads))
    config = load_model_config(args.config)
    taxonomy = Taxonomy.load(args.taxonomy or default_taxonomy_path(config))
    try:
        frame = read_dumps(args.data, dates=args.dates, limit=args.limit)
        val = read_dumps(args.val_data, dates=args.val_dates) if args.val_data else None
    except ValueError as e:  # DumpError included: a missing root, no rows on the days asked for
        raise SystemExit(f"vtag train: {e}") from e
    result = train(
        config, taxonomy, frame, args.out, max_minutes=args.max_minutes, seed=args.seed, device=args.device,
        resume=args.resume, progress=not args.no_progress, epochs=args.epochs, val_frames=val,
        label=args.label or Path(args.config).stem, data_desc={"data": args.data, "config": str(args.config),
                   **({"dates_selected": args.dates} if args.dates else {})},
    )
    _drop_checkpoint(args, result.stopped)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2, default=str))
    else:
        print(f"bundle {result.bundle_dir} model_version={result.model_version} stopped={result.stopped} "
              f"epochs={result.epochs_run} steps={result.steps} {result.seconds:.0f}s")
        print(validation_summary(result.metrics))
    return 0


def validation_summary(metrics: dict) -> str:
    """``vtag train``'s closing lines: the validation figures of the network alone and of the model
    as shipped, and the settings chosen on those rows (the whole record is in ``metrics.json``).

    Parameters
    ----------
    metrics
        The run's validation metrics (``TrainResult.metrics``).
    """
    from vtag.models.model_card import choices_made

    def figures(m: dict) -> str:
        keys = ["n", "leaf_acc"] + sorted(k for k in m if k.startswith("level") and k.endswith("_acc"))
        keys += ["hf1", "auprc", "violations"]
        return " ".join(f"{k}={m[k]:.4f}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in keys if k in m)

    lines = [f"validation, the network alone (best epoch): {figures(metrics)}"]
    shipped = metrics.get("shipped")
    if shipped:
        lines.append(f"validation, as shipped (settings chosen on these rows{', days replayed' if shipped.get('replayed') else ''}): "
                     f"{figures(shipped)}")
    lines += [line[2:] for line in choices_made(metrics) if line.startswith("- ")]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(_arg_parser().parse_args()))
