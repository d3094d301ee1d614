"""DHMCN heads on the public HMC benchmark data sets (FunCat / GO yeast, Diatoms, Enron, ImCLEF07).

The heads of :mod:`vtag.models.dhmcn` are trained standalone on the data sets' feature vectors, under
C-HMCNN's protocol (``../shared/data/hmc/README.md``):

1. :func:`hmc_arff.load_hmc_dataset` + ``standardize()`` (one-hot nominals; the per-file mean
   fill quirk; mean imputation and standardisation fitted on train+valid, or train for the
   "others").
2. **Epoch selection** on validation: train on train, score validation AU(PRC) after every epoch,
   stop after ``patience`` epochs without a gain; the best epoch wins (the "others" have no valid
   file: 30 % of train is split off, ``train_test_split(test_size=0.3, random_state=seed)`` as
   C-HMCNN). With ``--select-seeds K`` the median over K selection seeds is used.
3. **Final runs**: for every seed, retrain on train+valid for the chosen number of epochs and
   score the test set once: AU(PRC) as C-HMCNN computes it — micro average precision over the
   non-root classes (``CHMCNN_SKIP`` excluded) of the ancestor-closed labels
   (:func:`vtag.hierarchy.metrics.auprc_micro`), on the head's final ``prob``.

One recipe (:class:`Recipe`) for every data set — nothing is set per data set. Heads:
``dhmcn_v1`` (HMCN-F style), ``dhmcn_v2`` (dense), ``dhmcn_v3`` (dense + cascade), and ``+mc``
appended to any of them for C-HMCNN's max-constraint module and MCLoss (default ``dhmcn_v2+mc``).

Prints a table beside the published C-HMCNN(h) and HMCN-F figures and the runtime; the last line
printed is one JSON object::

    {"dataset": "cellcycle_FUN", "dhmcn_v1": {"auprc_mean": .., "auprc_std": .., ...}, ...}

(with several ``--data`` directories, one such line per data set, the last one last).

Usage::

    python bench/hmc.py --data ../shared/data/hmc/cellcycle_FUN [--seeds 5] [--heads dhmcn_v1,dhmcn_v3+mc]
        [--max-minutes 10] [--threads 1] [--json-out FILE] [--md-out FILE]
        [--device cuda] [--workers N]

``--device cuda`` trains the heads on the GPU (same recipe; default CPU). ``--md-out`` writes a
Markdown report (command, device, the table beside the published figures), rewritten after every
data set so that a stopped run still leaves what it finished.

**Workers and the time budget.** The budget ``--max-minutes M`` is counted in CPU seconds (= wall
time on an otherwise idle core with ``--threads 1``); a head's next final seed starts only if it
is expected (from the longest seed so far) to end within the head's share, else the remaining seeds
are skipped (``n_seeds`` says how many ran; the width search also stops widening when the
projection does not fit).

- ``--workers 1`` (default): the data sets, and the heads of each, run one after another in this
  process; each data set gets ``M`` minutes, and each head an equal share of what is left of them
  when it starts (a fast head leaves more to the later ones).
- ``--workers N`` (N > 1): the unit of work is one (data set, head) pair; N spawned processes (each
  with ``--threads`` torch threads, all on ``--device``) take them largest data set first
  (``_dataset_cost``), and within a data set the costlier heads first (``+mc``, then v2/v3, then
  the rest). Each head gets a fixed ``M · 60 · W / H`` CPU seconds, ``H`` = the number of heads and
  ``W = min(N, H)``: with 2 workers and 4 heads, 5 CPU minutes per head, so that one data set's four
  heads take at most about ``M`` minutes of wall time on two free cores (a data set may use up to
  ``W · M`` CPU minutes in all). Each worker loads and standardises the data set itself (kept for
  its next head of the same data set). A data set is reported (its table, its JSON line, the
  Markdown report) once its last head is done; its ``seconds`` is the wall time from its first
  head's start (load included) to its last head's end, its ``cpu_seconds`` the heads' sum. A head
  that fails marks its data set failed (its heads not yet started are dropped); the other data
  sets go on.

``--data`` takes data set directories, or a directory of them (every sub-directory with a train
and a test ``.arff`` is run). Data live outside the repo: relative names are looked up under
``$VTAG_SHARED_DATA/hmc`` (default ``../shared/data/hmc``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # bench/ holds blas_threads
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blas_threads import size_blas_pools  # noqa: E402

_THREADS = size_blas_pools()  # BLAS pools must be sized before numpy/torch load


REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hmc_arff import HMCDataset, load_hmc_dataset  # noqa: E402  (bench/hmc_arff.py)
from hmc_heads import (  # noqa: E402
    Recipe,
    head_budget_s,
    merge_heads,
    prepare_dataset,
    run_dataset,
    run_head,
)
from hmc_report import device_description, format_markdown, format_table, summary  # noqa: E402

SHARED_DATA = Path(os.environ.get("VTAG_SHARED_DATA", REPO.parent / "shared" / "data"))

DEFAULT_HEADS = ("dhmcn_v1", "dhmcn_v2", "dhmcn_v3", "dhmcn_v2+mc")

def dataset_dirs(paths: list[str], skipped: list[str] | None = None) -> list[Path]:
    """Data set directories named by ``paths`` (a data set, or a directory of them: every
    sub-directory with a train and a test ``.arff``; the others are appended to ``skipped``)."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if not path.exists() and not path.is_absolute():
            path = SHARED_DATA / "hmc" / p
        if not path.is_dir():
            raise SystemExit(f"no such data set directory: {p}")
        arffs = [x.name.lower() for x in path.glob("*.arff")]
        if arffs:
            out.append(path)
        else:
            subs = sorted(d for d in path.iterdir() if d.is_dir()
                          and any("train" in x.name.lower() for x in d.glob("*.arff"))
                          and any("test" in x.name.lower() for x in d.glob("*.arff")))
            if not subs:
                raise SystemExit(f"{path}: no .arff data set in it")
            if skipped is not None:
                skipped.extend(d.name for d in sorted(path.iterdir())
                               if d.is_dir() and d not in subs and any(d.glob("*.arff")))
            out.extend(subs)
    return out


def _arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="data set directories (or a directory of them)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--select-seeds", type=int, default=1, help="selection runs per head (median epoch)")
    ap.add_argument("--heads", default=",".join(DEFAULT_HEADS), help="comma-separated; '+mc' = max-constraint")
    ap.add_argument("--max-minutes", type=float, default=10.0,
                    help="time budget per data set in CPU minutes (0 = none): with --workers 1 the heads share "
                         "it (each an equal share of what is left); with N > 1 workers each head gets "
                         "max-minutes*60*W/H CPU seconds (H heads, W = min(N, H)), i.e. about max-minutes of "
                         "wall time per data set")
    ap.add_argument("--threads", type=int, default=int(_THREADS), help="torch threads (1 is fastest on a busy box)")
    ap.add_argument("--device", default="cpu", help="where the heads train: cpu (default), cuda, cuda:N")
    ap.add_argument("--workers", type=int, default=1,
                    help="(data set, head) pairs run in this many spawned processes at once, largest data "
                         "set first (each with --threads threads; they share the --device); a data set is "
                         "reported when its last head is done; 1 = everything in this process, in turn")
    ap.add_argument("--no-file-mean-quirk", action="store_true", help="skip C-HMCNN's per-file NaN mean fill")
    ap.add_argument("--widths", help="comma-separated width multipliers to search (default 1,2)")
    ap.add_argument("--json-out", help="also write the results (a list, one per data set) here")
    ap.add_argument("--md-out", help="also write a Markdown report here (rewritten after every data set)")
    ap.add_argument("--note", help="a line added to the Markdown report (e.g. what ran this command)")
    for f in ("hidden", "dropout", "lr", "batch", "max_epochs", "patience"):
        ap.add_argument(f"--{f.replace('_', '-')}", type=type(getattr(Recipe, f)), default=None,
                        help=f"override the recipe's {f} (default {getattr(Recipe, f)})")
    return ap


def _dataset_cost(path: Path) -> float:
    """Rough cost key for scheduling (largest first): rows (all files) × (1 + hierarchy entries / 500)
    — deep, wide DAGs (GO) first, then the many-row sets, then the small trees."""
    rows, entries = 0, 0
    for f in path.glob("*.arff"):
        with open(f, "rb") as fh:
            for line in fh:
                if not entries and line[:10].lower() == b"@attribute" and b" hierarchical " in line.lower():
                    entries = line.count(b",") + 1
                rows += 1
    return rows * (1.0 + entries / 500.0)


def _prefixed(prefix: str):
    """A log function printing ``m`` with ``prefix`` on every line, in one write (pool workers
    share the terminal: a separate newline write could land after another process's line)."""
    def log(m: str) -> None:
        sys.stdout.write("".join(prefix + line + "\n" for line in str(m).splitlines()))
        sys.stdout.flush()

    return log


def _load(path: str, file_mean_quirk: bool, log, device: str) -> HMCDataset:
    """Load and standardise one data set, logging its shape and the load time."""
    t = time.monotonic()
    ds = load_hmc_dataset(Path(path)).standardize(file_mean_quirk=file_mean_quirk)
    h = ds.hierarchy
    log(f"{ds.name}: {h.kind}, {int(h.eval_mask.sum())} classes, depth {h.depth}, in-dim {ds.in_dim}, "
        f"train {len(ds.train)} valid {len(ds.valid) if ds.valid is not None else '-'} test {len(ds.test)} "
        f"(loaded in {time.monotonic() - t:.1f}s) on {device}")
    return ds


def _run_one(path: str, heads: list[str], seeds: int, recipe: Recipe, select_seeds: int,
             max_minutes: float | None, file_mean_quirk: bool, device: str, threads: int,
             prefix: str = "") -> dict:
    """Load, standardise and run one data set, its heads one after another in this process; prints
    its log lines and table, returns :func:`run_dataset`'s dict (with load time, device)."""
    import torch

    torch.set_num_threads(threads)
    log = _prefixed(prefix)
    t, c = time.monotonic(), time.process_time()
    ds = _load(path, file_mean_quirk, log, device)
    res = run_dataset(ds, heads, seeds, recipe, select_seeds, max_minutes, log=log, device=device)
    res["seconds"] = round(time.monotonic() - t, 1)
    res["cpu_seconds"] = round(time.process_time() - c, 1)
    res["device"] = device
    log(format_table(res, heads))
    return res


class TaskError(RuntimeError):
    """A pool task's failure, as ``"<type>: <message>"`` of the original exception: always picklable
    (an exception that is not, e.g. ``ArffError``, would break the whole pool, every data set)."""


_LOADED: dict = {}  # pool worker: the last data set it loaded, {key: (ds, prepare_dataset(ds, recipe))}


def _run_head_task(path: str, head: str, seeds: int, recipe: Recipe, select_seeds: int,
                   budget_s: float | None, file_mean_quirk: bool, device: str, threads: int,
                   prefix: str = "") -> dict:
    """One (data set, head) unit of work in a pool worker: load and standardise the data set (kept
    for the worker's next head of the same data set), then :func:`run_head` with a budget of
    ``budget_s`` CPU seconds of this process, counted from after the load. Returns ``{"dataset",
    "head", "result", "start", "end", "cpu_seconds"}`` (start/end: ``time.time()``, the load
    included; cpu_seconds: this task's, the load included)."""
    import traceback

    import torch

    torch.set_num_threads(threads)
    log = _prefixed(prefix)
    start, c = time.time(), time.process_time()
    try:
        key = (path, file_mean_quirk, recipe)
        if key not in _LOADED:
            _LOADED.clear()
            ds = _load(path, file_mean_quirk, log, device)
            _LOADED[key] = (ds, prepare_dataset(ds, recipe))
        ds, prepared = _LOADED[key]
        deadline = None if budget_s is None else time.process_time() + budget_s
        res = run_head(ds, head, seeds, recipe, select_seeds, deadline, log=log, device=device, prepared=prepared)
    except Exception as e:  # noqa: BLE001 - sent back as a plain, picklable error
        log(traceback.format_exc().rstrip())
        raise TaskError(f"{type(e).__name__}: {e}") from None
    return {"dataset": ds.name, "head": head, "result": res, "start": start, "end": time.time(),
            "cpu_seconds": time.process_time() - c}


def _merge_tasks(tasks: list[dict], heads: list[str], recipe: Recipe, device: str) -> dict:
    """One data set's dict from its :func:`_run_head_task` results: ``seconds`` = wall time from
    the first head's start to the last head's end, ``cpu_seconds`` = the heads' CPU seconds summed."""
    per_head = {t["head"]: t["result"] for t in tasks}
    wall = max(t["end"] for t in tasks) - min(t["start"] for t in tasks)
    res = merge_heads(tasks[0]["dataset"], heads, per_head, recipe, wall, sum(t["cpu_seconds"] for t in tasks))
    res["device"] = device
    return res


def _head_rank(head: str) -> int:
    """Scheduling order of the heads of one data set (costliest first): ``+mc``, then the dense
    heads (v2, v3), then the rest."""
    name, _, flag = head.partition("+")
    return 0 if flag else (1 if name in ("dhmcn_v2", "dhmcn_v3") else 2)


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    over = {f: getattr(args, f) for f in ("hidden", "dropout", "lr", "batch", "max_epochs", "patience")
            if getattr(args, f) is not None}
    if args.widths:
        over["widths"] = tuple(int(w) for w in args.widths.split(","))
    recipe = replace(Recipe(), **over)
    if "hidden" in over:
        recipe = replace(recipe, local_hidden=max(1, recipe.hidden // 2))
    for h in heads:
        recipe.head_cfg(h)  # fail early on a bad name
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here")
    skipped: list[str] = []
    dirs = dataset_dirs(args.data, skipped)
    if skipped:
        print(f"skipped (no train or no test .arff): {', '.join(skipped)}", flush=True)
    command = "python bench/hmc.py " + " ".join(sys.argv[1:] if argv is None else argv)
    device = device_description(args.device)
    print(f"{len(dirs)} data set(s) on {device}, {max(1, args.workers)} worker(s)", flush=True)
    t_all = time.monotonic()
    results: list[dict] = []
    failed: dict[str, str] = {}
    names = [d.name for d in dirs]

    finished: set[str] = set()

    def done(res: dict, dname: str) -> None:
        results.append(res)
        finished.add(dname)
        if args.json_out:
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_out).write_text(json.dumps(results, indent=1))
        if args.md_out:
            Path(args.md_out).parent.mkdir(parents=True, exist_ok=True)
            pending = [n for n in names if n not in finished and n not in failed]
            Path(args.md_out).write_text(format_markdown(
                results, heads, command=command, device=device, seeds=args.seeds,
                wall_s=time.monotonic() - t_all, pending=pending, failed=failed, skipped=skipped, note=args.note))
        print(json.dumps(summary(res, heads)), flush=True)

    common = dict(heads=heads, seeds=args.seeds, recipe=recipe, select_seeds=args.select_seeds,
                  max_minutes=args.max_minutes or None, file_mean_quirk=not args.no_file_mean_quirk,
                  device=args.device, threads=args.threads)
    if args.workers <= 1 or len(dirs) * len(heads) == 1:
        for d in dirs:
            done(_run_one(str(d), **common), d.name)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # the unit of work is one (data set, head): largest data set first, its costliest heads first
        tasks = [(d, h) for d in sorted(dirs, key=_dataset_cost, reverse=True)
                 for h in sorted(heads, key=_head_rank)]
        budget = head_budget_s(common.pop("max_minutes"), len(heads), args.workers)
        del common["heads"]
        got: dict[str, list[dict]] = {d.name: [] for d in dirs}
        n_workers = min(args.workers, len(tasks))
        if budget is not None:
            print(f"budget: {budget:.0f} CPU s per head ({len(heads)} heads, {n_workers} worker(s))", flush=True)
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(_run_head_task, str(d), h, **common, budget_s=budget, prefix=f"[{d.name} {h}] "): (d, h)
                    for d, h in tasks}
            for f in as_completed(futs):
                d, h = futs[f]
                if d.name in failed:  # a head of this data set failed already (or this one was cancelled)
                    continue
                try:
                    r = f.result()
                except Exception as e:  # noqa: BLE001 - one data set's failure must not lose the others
                    why = str(e) if isinstance(e, TaskError) else f"{type(e).__name__}: {e}"
                    failed[d.name] = f"{h}: {why}"
                    print(f"[{d.name}] FAILED ({h}): {why}", flush=True)
                    for g, (d2, _) in futs.items():  # its heads not yet started are not run
                        if d2 == d:
                            g.cancel()
                    continue
                got[d.name].append(r)
                if len(got[d.name]) == len(heads):  # the data set's last head: report it
                    res = _merge_tasks(got.pop(d.name), heads, recipe, args.device)
                    _prefixed(f"[{d.name}] ")(format_table(res, heads))
                    done(res, d.name)
        if failed and args.md_out and not results:
            Path(args.md_out).write_text(format_markdown([], heads, command=command, device=device,
                                                         seeds=args.seeds, failed=failed, skipped=skipped,
                                                         note=args.note))
    print(f"total {time.monotonic() - t_all:.0f}s wall for {len(results)} data set(s)"
          + (f", {len(failed)} failed" if failed else ""), flush=True)
    if results:  # the last line stays one data set's JSON object
        print(json.dumps(summary(results[-1], heads)), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
