"""vtag against peers on real Bilibili video titles (two-level zones; no covers).

Data: JSON Lines in the format of ``../shared/data/zh_titles/bilibili_popular_2023/videos.jsonl``
(README there): ``title``, ``desc`` (``"-"`` = empty), ``tid`` (the sub-zone: the label, a node id
of ``conf/taxonomy/bilibili-v1.yaml``), ``owner_mid`` (uploader), ``duration`` (s), ``pubdate``,
``aid``/``bvid``. The level-1 zone comes from the taxonomy (not from the file's ``parent_tid``).
Rows without a ``tid``, or whose ``tid`` is not a taxonomy node, are dropped (counted in the output).

Split: ``--train FILE --test FILE``, or one file (``--data``, default the shared file) split once
(``--test-fraction 0.2``) by ``--split``: ``time`` (the default and the headline: the earliest rows by
upload time train, the latest test, uploaders as they come; :func:`vtag.models.data.temporal_split`)
or ``uploader`` (:func:`vtag.models.data.grouped_split`, split seed ``--split-seed 0``: no uploader
is on both sides).

Systems, all on the same split and the same inputs where they can take them (title + description
text, uploader id, duration bucket — :func:`vtag.models.context.duration_buckets`, vtag's buckets):

- ``vtag``: the shipped config (``--shipped-config``, default ``conf/model/text-context.yaml``) as it
  is; ``vtag_<head>`` (e.g. ``vtag_dhmcn_v3``, ``vtag_flat``): ``--model-config`` (default
  ``conf/model/cpu-small.yaml``) with only ``head.name`` changed. Both with text + context modalities
  (no image: there are no covers), trained by :func:`vtag.models.training.train` (its own validation
  split, by time after a time split), written as a bundle and run through
  :class:`vtag.models.predictor.Predictor` — the production path.
- ``svm_tfidf`` / ``svm_chars``: TF-IDF (sublinear tf) over jieba word uni+bigrams (``_chars``: plus
  character n-grams) of title + description, ``LinearSVC`` over the leaves; ``*_ctx``: the same beside
  one-hot uploader and duration bucket. ``C`` from :data:`peers.SVM_C_GRID` on the inner validation
  split, then refitted on the whole training side.
- ``tfidf_lr``: the word TF-IDF beside one-hot uploader and duration bucket, multinomial logistic
  regression over the leaves (flat).
- ``hiclass_lcppn_lr``: the same features, HiClass ``LocalClassifierPerParentNode`` with logistic
  regression (a local hierarchical peer).
- ``fasttext_ngrams``: fastText-style: the mean of hashed embeddings of word uni+bigrams, character
  1-3-grams and ``uploader``/``duration`` tokens, then a linear softmax over the leaves (torch).

Peer settings are not tuned to any file: ``C`` is picked on an inner 90/10 split of the training
side (:func:`peers.inner_split`: by time after a time split, by uploader otherwise, the kind of split
vtag validates on), the fastText-style model stops early on the same split; everything else is fixed
here.

vtag with the uploader-profile input gives two rows per system. ``vtag``: the test side scored day by
day the way the nightly job meets it (:mod:`vtag.models.replay`, ``vtag evaluate --replay``): each
test day sees the bundle's profiles plus the model's own tags (score >= ``--replay-min-score``,
each counted by its score as the shipped job conf's ``profiles.count`` does) of the test days before it — what ``vtag profiles refresh`` gives the next
night — and never a test label. ``vtag[static]``: every test row with the bundle's training-time
profiles alone (``vtag evaluate --no-replay``). The peers are static models: they have no nightly loop.

Metrics on the test side, from each system's primary predicted node (its path = the predicted set):
level-1 accuracy, leaf accuracy, hierarchical F1 (micro, :func:`vtag.hierarchy.metrics.hierarchical_prf`).
Each system runs with ``--seeds`` training seeds (the deterministic peers — all but ``fasttext_ngrams`` — once: std 0).
The last line printed is one JSON object ``{system: {"leaf_acc", "leaf_acc_std", "level1_acc",
"level1_acc_std", "hf1", "hf1_std"}}``.

Usage::

    python bench/bilibili.py [--data FILE | --train FILE --test FILE] [--seeds 3] [--systems a,b]
        [--threads 1] [--json-out FILE] [--md-out FILE] [--device cuda] [--workers N]

``--device cuda``: vtag's model trains and predicts on the GPU (the peers stay on the CPU).
``--workers N``: the runs (system × seed) go to N processes at once (tokenised once, here).
``--md-out``: a Markdown report (command, device, split, table), rewritten after every run.
"""

from __future__ import annotations

import os
import sys

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # bench/ holds blas_threads
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blas_threads import size_blas_pools  # noqa: E402

_THREADS = size_blas_pools()  # BLAS pools must be sized before numpy/torch load

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from bilibili_report import aggregate, format_markdown, format_table, score  # noqa: E402,F401  (re-exported)
from hardware import cpu_description, gpu_name, torch_versions  # noqa: E402  (bench/hardware.py)
from peers import (  # noqa: E402,F401  (the peers; SparseFeatures & co. re-exported for the tests)
    INNER_SPLIT,
    PeerInputs,
    SparseFeatures,
    _texts,
    context_tokens,
    inner_split,
    jieba_tokens,
    run_fasttext,
    run_hiclass,
    run_svm,
    run_tfidf_lr,
)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED_DATA = Path(os.environ.get("VTAG_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_DATA = SHARED_DATA / "zh_titles" / "bilibili_popular_2023" / "videos.jsonl"
DEFAULT_TAXONOMY = REPO / "conf" / "taxonomy" / "bilibili-v1.yaml"
DEFAULT_MODEL = REPO / "conf" / "model" / "cpu-small.yaml"
PEERS = ("svm_tfidf", "svm_tfidf_ctx", "svm_chars", "svm_chars_ctx", "tfidf_lr", "hiclass_lcppn_lr", "fasttext_ngrams")
SYSTEMS = ("vtag", *PEERS)
DETERMINISTIC = tuple(p for p in PEERS if p != "fasttext_ngrams")  # the seeded fastText-style run varies
SHIPPED_MODEL = REPO / "conf" / "model" / "text-context.yaml"


# ---------------------------------------------------------------------------------------- data
def read_videos(path: str | Path, taxonomy, keep_unknown: bool = False) -> tuple[pd.DataFrame, int]:
    """JSONL -> a labeled frame in ``vtag.models.schema.LABELED_SCHEMA`` columns (``cover`` null,
    ``labels = [str(tid)]``), and the number of rows dropped for a missing or unknown ``tid``
    (``keep_unknown``: kept, ``labels`` ``[]`` or ``[tid]``, and counted all the same).

    Only ``title`` and ``tid`` are needed; ``desc``, ``owner_mid``, ``duration``, ``pubdate`` and the
    id (``bvid``, else ``aid``, else the line number) may be missing from a file or from a row.
    Raises ValueError when the file has no ``tid`` or no ``title`` at all."""
    raw = pd.read_json(path, lines=True, dtype=False)
    for need in ("tid", "title"):
        if need not in raw.columns:
            raise ValueError(f"{path}: no {need!r} field in any row (expected the format of "
                             f"{DEFAULT_DATA.parent / 'README.md'})")

    def col(name: str) -> pd.Series:
        return raw[name] if name in raw.columns else pd.Series([None] * len(raw), dtype=object)

    def missing(v) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    def ident(v) -> str | None:  # 212, 212.0 (a column with nulls turns float) and "212" -> "212"
        if missing(v):
            return None
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return str(v).strip() or None

    def obj(values) -> pd.Series:  # object columns keep None (pandas 3 would infer str with NaN)
        return pd.Series(list(values), dtype=object)

    ids = [ident(b) or ident(a) or f"line{i + 1}" for i, (b, a) in enumerate(zip(col("bvid"), col("aid")))]
    duration = pd.to_numeric(col("duration"), errors="coerce").astype("float64")
    frame = pd.DataFrame({
        "video_id": obj(ids),
        "title": obj("" if missing(t) else str(t) for t in raw["title"]),
        "description": obj(None if missing(d) or str(d).strip() in ("", "-") else str(d) for d in col("desc")),
        "cover": obj([None] * len(raw)),
        "uploader_id": obj(ident(u) for u in col("owner_mid")),
        "source_program": obj([None] * len(raw)),
        "duration_s": duration.where(duration >= 0).round().astype("Int64"),
        "upload_ts": pd.to_datetime(pd.to_numeric(col("pubdate"), errors="coerce"), unit="s", utc=True),
        "labels": obj([ident(t)] if ident(t) is not None else [] for t in raw["tid"]),
    })
    known = frame["labels"].map(lambda x: bool(x) and x[0] in taxonomy.by_id).to_numpy()
    if keep_unknown:
        return frame, int((~known).sum())
    return frame.loc[known].reset_index(drop=True), int((~known).sum())


def load_split(args: argparse.Namespace, taxonomy, reader: Callable = None
               ) -> tuple[pd.DataFrame, pd.DataFrame, int, str]:
    """``(train, test, rows dropped, description)`` from ``--train/--test`` or ``--data`` split by
    uploader (``--test-fraction``, ``--split-seed``); a bad file or option exits with its message."""
    reader = reader or read_videos
    if bool(args.train) != bool(args.test):
        raise SystemExit("--train and --test go together")
    gap = getattr(args, "gap_fraction", 0.0)  # bench/bilibili_sweep.py's arguments have no gap (nor split)
    if gap and (args.train or getattr(args, "split", "uploader") != "time"):
        raise SystemExit("--gap-fraction goes with --split time on one file (--data)")
    try:
        if args.train:
            train, d1 = reader(args.train, taxonomy)
            test, d2 = reader(args.test, taxonomy)
            return train, test, d1 + d2, f"train {args.train}, test {args.test}"
        frame, dropped = reader(args.data, taxonomy)
    except ValueError as e:
        raise SystemExit(f"{Path(sys.argv[0]).name}: {e}") from e
    if getattr(args, "split", "uploader") == "time":
        train, test = time_split(frame, args.test_fraction, gap)
        skipped = f", the {gap:.0%} between left out" if gap > 0 else ""
        return train, test, dropped, (f"{args.data} split in time (earliest {1 - args.test_fraction - gap:.0%} by "
                                      f"upload time -> latest {args.test_fraction:.0%}{skipped}; "
                                      f"uploaders as they come)")
    train, test = default_split(frame, args.test_fraction, args.split_seed)
    return train, test, dropped, (f"{args.data} split by uploader (test fraction {args.test_fraction}, "
                                  f"split seed {args.split_seed})")


def default_split(frame: pd.DataFrame, test_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from vtag.models.data import grouped_split

    tr, te = grouped_split(frame, test_fraction, seed)
    return frame.iloc[tr].reset_index(drop=True), frame.iloc[te].reset_index(drop=True)


def time_split(frame: pd.DataFrame, test_fraction: float, gap_fraction: float = 0.0
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The latest ``test_fraction`` of the rows by ``upload_ts`` -> test, the earliest ``1 -
    test_fraction - gap_fraction`` -> train (how the nightly job meets data: trained on earlier
    days, tagging later ones). ``gap_fraction`` of the rows between the two are left out: a model
    trained a while before the days it tags, as when a bundle is not retrained for months."""
    from vtag.models.data import temporal_split

    if frame["upload_ts"].isna().all():
        raise SystemExit("--split time needs upload times (pubdate / upload_ts); this data has none")
    if not 0.0 <= gap_fraction < 1.0 - test_fraction:
        raise SystemExit(f"--gap-fraction must be in [0, {1.0 - test_fraction:g}) with --test-fraction "
                         f"{test_fraction:g}; got {gap_fraction:g}")
    tr, te = temporal_split(frame, test_fraction)
    if gap_fraction > 0:
        rest = frame.iloc[tr]
        keep, _ = temporal_split(rest, gap_fraction * len(frame) / len(rest))
        tr = tr[keep]
    return frame.iloc[tr].reset_index(drop=True), frame.iloc[te].reset_index(drop=True)


#: ``profiles.min_score`` and ``profiles.count`` of the shipped job confs (conf/jobs/*.yaml): the
#: replayed vtag rows use them
REPLAY_MIN_SCORE = 0.0
REPLAY_COUNT = "score"
#: the name suffix of a vtag row scored with the bundle's training-time profiles alone (no replay)
STATIC_SUFFIX = "[static]"

# ---------------------------------------------------------------------------------------- vtag
def vtag_config(model_config: Path, head: str) -> dict:
    from vtag.models.training import load_model_config

    cfg = load_model_config(model_config)
    cfg["modalities"] = [m for m in cfg.get("modalities", ["text", "image", "context"]) if m != "image"]
    name, _, flag = head.partition("+")
    cfg.setdefault("head", {})
    cfg["head"] = {**cfg["head"], "name": name}
    if flag == "mc":
        cfg["head"]["max_constraint"] = True
    return cfg


def train_and_predict(cfg: dict, taxonomy, train: pd.DataFrame, test: pd.DataFrame, seed: int, *,
                      device: str = "cpu", epochs: int | None = None, max_minutes: float | None = None,
                      label: str = "bench-bilibili", replay_min_score: float | None = None):
    """vtag's production path on one split: :func:`vtag.models.training.train` (its own validation
    split) -> bundle -> :class:`vtag.models.predictor.Predictor` on ``test``.

    Returns ``(primary node index [n_test] int64, the TrainResult, replayed [n_test] int64 or None)``:
    the first with the bundle's profiles alone (``vtag evaluate``), the last — with ``replay_min_score``
    and a bundle with the profile input — the test days replayed as the nightly job meets them
    (``vtag evaluate --replay``: each day sees the tags of the days before, by their scores)."""
    from vtag.models.predictor import Predictor
    from vtag.models.replay import replay_scores
    from vtag.models.training import train as train_model

    with tempfile.TemporaryDirectory(prefix="vtag-bili-") as tmp:
        res = train_model(cfg, taxonomy, train, Path(tmp) / "bundle", seed=seed, device=device, epochs=epochs,
                          progress=False, max_minutes=max_minutes, label=label)
        pred = Predictor.load(res.bundle_dir, device=device, expected_taxonomy_version=taxonomy)
        unlabeled = test.drop(columns=["labels"])
        decoded, _ = pred.predict_scores(unlabeled)
        replayed = None
        if replay_min_score is not None and getattr(pred.featurizer, "profile", None) is not None:
            replayed = np.asarray(replay_scores(pred, unlabeled, replay_min_score, REPLAY_COUNT)[0].leaf,
                                  dtype=np.int64)
    return np.asarray(decoded.leaf, dtype=np.int64), res, replayed


def run_vtag(head: str, model_config: Path, max_minutes: float | None, epochs: int | None = None,
             device: str = "cpu", replay_min_score: float | None = REPLAY_MIN_SCORE) -> Callable:
    """``head`` "": the shipped config file as it is (``vtag``); else ``model_config`` without images
    and with that head (``vtag_<head>``). A bundle with the uploader-profile input gives two rows:
    the system's (the test days replayed as the nightly job meets them, ``vtag evaluate --replay``)
    and ``<system>[static]`` (every test row with the bundle's training-time profiles alone)."""
    def run(taxonomy, train, test, inputs, seed, log) -> np.ndarray | dict[str, np.ndarray]:
        from vtag.models.training import load_model_config

        cfg = load_model_config(model_config) if not head else vtag_config(model_config, head)
        leaf, res, replayed = train_and_predict(cfg, taxonomy, train, test, seed, device=device, epochs=epochs,
                                                max_minutes=max_minutes, label=f"bench-bilibili-{head or 'vtag'}",
                                                replay_min_score=replay_min_score)
        log(f"    epochs {res.epochs_run} (best {res.best_epoch}, {res.stopped}), valid "
            + " ".join(f"{k}={res.metrics.get(k, float('nan')):.4f}" for k in ("leaf_acc", "level1_acc", "hf1"))
            + (f" tfidf mix scale {res.metrics['tfidf_mix']['scale']} (rule {res.metrics['tfidf_mix'].get('rule')}, "
               f"validation score per scale: {res.metrics['tfidf_mix']['validation']})"
               if "tfidf_mix" in res.metrics else "")
            + (f" profile evidence scale {res.metrics['profile_evidence']['scale']} (replayed validation: "
               f"{res.metrics['profile_evidence']['validation']})" if "profile_evidence" in res.metrics else "")
            + (f" decode stop threshold {res.metrics['stop_threshold']}, primary {res.metrics.get('decode_primary')}"
               if "stop_threshold" in res.metrics else ""))
        if replayed is None:
            return leaf
        return {"": replayed, STATIC_SUFFIX: leaf}

    return run


# ---------------------------------------------------------------------------------------- main
def _arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="one JSONL file, split by --split (default: the shared file)")
    ap.add_argument("--train", help="training JSONL (with --test: no split)")
    ap.add_argument("--test", help="test JSONL")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--split", choices=("time", "uploader"), default="time",
                    help="time: earliest rows train, latest test (the headline: how the nightly job meets data); "
                         "uploader: no uploader on both sides (every test uploader is new)")
    ap.add_argument("--gap-fraction", type=float, default=0.0,
                    help="--split time: leave out this share of the rows between train and test (a bundle "
                         "trained a while before the days it tags; default 0)")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the uploader-grouped split (default 0)")
    ap.add_argument("--taxonomy", default=str(DEFAULT_TAXONOMY))
    ap.add_argument("--model-config", default=str(DEFAULT_MODEL),
                    help="model config of the vtag_<head> systems (image is disabled)")
    ap.add_argument("--shipped-config", default=str(SHIPPED_MODEL),
                    help="the config of system 'vtag', used as it is (default conf/model/text-context.yaml)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma-separated; vtag_<head> for any head of vtag.models.dhmcn (+mc allowed)")
    ap.add_argument("--vtag-max-minutes", type=float, default=None, help="time budget per vtag training run")
    ap.add_argument("--vtag-epochs", type=int, default=None, help="override train.epochs of the model config")
    ap.add_argument("--device", default="cpu",
                    help="where vtag's model trains and predicts: cpu (default), cuda, cuda:N (peers: CPU)")
    ap.add_argument("--workers", type=int, default=1,
                    help="runs (system × seed) in this many processes at once (each with --threads threads); "
                         "1 = one after the other in this process")
    ap.add_argument("--threads", type=int, default=int(_THREADS))
    ap.add_argument("--replay-min-score", type=float, default=REPLAY_MIN_SCORE,
                    help="vtag rows: the test days replayed as the nightly job meets them, a tag counting towards "
                         "its uploader's profile from the next day on when its score is at least this "
                         f"(default {REPLAY_MIN_SCORE}, the shipped job conf's profiles.min_score); the "
                         "'<system>[static]' rows use the bundle's profiles alone")
    ap.add_argument("--no-replay", action="store_true", help="vtag rows with the bundle's profiles alone")
    ap.add_argument("--json-out", help="also write all figures (per seed too) here")
    ap.add_argument("--md-out", help="also write a Markdown report here (rewritten after every run)")
    ap.add_argument("--note", help="a line added to the Markdown report (e.g. what ran this command)")
    return ap


def device_description(device: str) -> str:
    """One line naming the hardware: the GPU (vtag on CUDA) and the CPU (peers, or everything)."""
    gpu = gpu_name(device)
    if gpu:
        return f"vtag on {gpu}, peers on {cpu_description()} ({torch_versions(True)})"
    return f"{cpu_description()} ({torch_versions(False)})"


#: per-process state of a run (set by :func:`_init_worker`; in the parent too with ``--workers 1``)
_CTX: dict = {}


def _init_worker(taxonomy_path: str, train: pd.DataFrame, test: pd.DataFrame, inputs: PeerInputs,
                 opts: dict) -> None:
    import torch

    from vtag.hierarchy.taxonomy import Taxonomy

    torch.set_num_threads(int(opts["threads"]))
    logging.basicConfig(level=logging.WARNING)
    INNER_SPLIT["kind"] = opts.get("split", "uploader")
    taxonomy = Taxonomy.load(taxonomy_path)
    seen = set(train["uploader_id"].dropna())
    _CTX.update(taxonomy=taxonomy, train=train, test=test, inputs=inputs, opts=opts,
                true_idx=np.array([taxonomy.index[x[0]] for x in test["labels"]]),
                returning=np.array([u in seen for u in test["uploader_id"]], dtype=bool))


def _make_runner(system: str, opts: dict) -> Callable:
    replay = opts.get("replay_min_score")
    if system == "vtag":
        return run_vtag("", Path(opts["shipped_config"]), opts["vtag_max_minutes"], opts["vtag_epochs"],
                        device=opts["device"], replay_min_score=replay)
    if system.startswith("vtag_"):
        return run_vtag(system[len("vtag_"):], Path(opts["model_config"]), opts["vtag_max_minutes"],
                        opts["vtag_epochs"], device=opts["device"], replay_min_score=replay)
    return {"tfidf_lr": run_tfidf_lr, "hiclass_lcppn_lr": run_hiclass, "fasttext_ngrams": run_fasttext,
            "svm_tfidf": run_svm(False), "svm_tfidf_ctx": run_svm(True),
            "svm_chars": run_svm(False, chars=True), "svm_chars_ctx": run_svm(True, chars=True)}[system]


def _run_task(system: str, seed: int, prefix: str = "") -> dict[str, dict]:
    """One training run of ``system`` with ``seed`` on the split in :data:`_CTX`: ``{row name: test
    metrics}`` (vtag with profiles gives two rows: replayed and ``[static]``)."""
    def log(m):
        print("\n".join(prefix + line for line in str(m).splitlines()), flush=True)

    c = _CTX
    t = time.monotonic()
    out = _make_runner(system, c["opts"])(c["taxonomy"], c["train"], c["test"], c["inputs"], seed, log)
    seconds = round(time.monotonic() - t, 1)
    rows = {}
    for suffix, pred in (out.items() if isinstance(out, dict) else [("", out)]):
        m = score(c["taxonomy"], c["true_idx"], pred, c["returning"])
        m["seconds"] = seconds
        split = "".join(f" {k[9:]} {m[k]:.4f}" for k in ("leaf_acc_returning", "leaf_acc_new") if k in m)
        log(f"  {system}{suffix} seed {seed}: leaf {m['leaf_acc']:.4f} level1 {m['level1_acc']:.4f} "
            f"hF1 {m['hf1']:.4f}{split} ({seconds:.0f}s)")
        rows[system + suffix] = m
    return rows


def main(argv: list[str] | None = None, *, reader: Callable | None = None,
         parser: argparse.ArgumentParser | None = None, title: str | None = None, script: str = "bench/bilibili.py") -> int:
    """Run the comparison; ``reader(path, taxonomy) -> (labeled frame, rows dropped)`` reads
    ``--data``/``--train``/``--test`` (default: Bilibili JSONL), ``parser`` and ``title`` let another
    script (bench/realdata.py) reuse everything else."""
    args = (parser or _arg_parser()).parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    from vtag.hierarchy.taxonomy import Taxonomy

    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here")
    t_all = time.monotonic()
    taxonomy = Taxonomy.load(args.taxonomy)
    train, test, dropped, split_desc = load_split(args, taxonomy, reader)
    shared_up = set(train["uploader_id"].dropna()) & set(test["uploader_id"].dropna())
    print(f"{split_desc}: train {len(train)} rows, test {len(test)} rows, {dropped} rows dropped (missing or unknown tid), "
          f"{len(shared_up)} uploaders on both sides", flush=True)

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if not s.startswith("vtag") and s not in PEERS:
            raise SystemExit(f"unknown system {s!r} (known: {', '.join(SYSTEMS)}, vtag_<head>)")

    t = time.monotonic()
    tr_texts, te_texts = _texts(train), _texts(test)
    if any(not s.startswith("vtag") for s in systems):
        inputs = PeerInputs(jieba_tokens(tr_texts), jieba_tokens(te_texts), context_tokens(train),
                            context_tokens(test), tr_texts, te_texts)
        print(f"tokenised in {time.monotonic() - t:.1f}s", flush=True)
    else:  # only vtag: it tokenises on its own
        inputs = PeerInputs([], [], [], [], tr_texts, te_texts)

    command = f"python {script} " + " ".join(sys.argv[1:] if argv is None else argv)
    device = device_description(args.device)
    opts = {"model_config": args.model_config, "shipped_config": args.shipped_config, "split": args.split,
            "vtag_max_minutes": args.vtag_max_minutes,
            "vtag_epochs": args.vtag_epochs, "device": args.device, "threads": args.threads,
            "replay_min_score": None if args.no_replay else args.replay_min_score}
    tasks = [(s, seed) for s in systems for seed in range(1 if s in DETERMINISTIC else args.seeds)]
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    failed: dict[str, str] = {}

    def log(m):
        print(m, flush=True)

    def report() -> dict[str, dict]:
        results = {s: aggregate(sorted(r, key=lambda x: x["seed"])) for s, r in runs.items() if r}
        if args.md_out:
            want = {s: sum(1 for x in tasks if x[0] == s) for s in systems}
            pending = [f"{s} ({len(runs.get(s, []))}/{want[s]} runs)" for s in systems
                       if len(runs.get(s, [])) < want[s] and s not in failed]
            Path(args.md_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.md_out).write_text(format_markdown(
                results, command=command, device=device, split_desc=split_desc, seeds=args.seeds,
                n_train=len(train), n_test=len(test), wall_s=time.monotonic() - t_all, pending=pending,
                failed=failed, note=args.note, **({"title": title} if title else {})))
        return results

    def finish(system: str, seed: int, m: dict | None, err: BaseException | None) -> None:
        if err is not None:
            failed[system] = f"{type(err).__name__}: {err}"
            log(f"  {system} seed {seed} FAILED: {failed[system]}")
        else:
            for name, metrics in m.items():
                runs.setdefault(name, []).append({**metrics, "seed": seed})
        report()

    if args.workers <= 1:
        _init_worker(args.taxonomy, train, test, inputs, opts)
        for s, seed in tasks:
            if s in failed:
                continue
            try:
                finish(s, seed, _run_task(s, seed), None)
            except Exception as e:  # noqa: BLE001 - one system's failure must not lose the others
                finish(s, seed, None, e)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # longest first: the LR peers (C grid: 4 fits each), then vtag, then the fastText-style runs
        rank = {"hiclass_lcppn_lr": 0, "tfidf_lr": 1, "svm_tfidf": 1, "svm_tfidf_ctx": 1, "svm_chars": 1,
                "svm_chars_ctx": 1, "fasttext_ngrams": 3}
        order = sorted(tasks, key=lambda x: (rank.get(x[0], 2), x[1]))
        with ProcessPoolExecutor(max_workers=min(args.workers, len(order)), mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker,
                                 initargs=(args.taxonomy, train, test, inputs, opts)) as ex:
            futs = {ex.submit(_run_task, s, seed, f"[{s} #{seed}] "): (s, seed) for s, seed in order}
            for f in as_completed(futs):
                s, seed = futs[f]
                err = f.exception()
                finish(s, seed, None if err else f.result(), err)

    results = report()
    print("\n" + format_table(results))
    print(f"total {time.monotonic() - t_all:.0f}s", flush=True)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"split": split_desc, "train_rows": len(train),
                                                   "test_rows": len(test), "device": device, "failed": failed,
                                                   "results": results}, indent=1))
    print(json.dumps({s: {k: v for k, v in r.items() if k != "runs"} for s, r in results.items()}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
