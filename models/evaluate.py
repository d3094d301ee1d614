"""``vtag evaluate --bundle B --data D [--json] [--out FILE]``: a bundle's metrics on a labeled dump.

The bundle is run through :class:`vtag.models.predictor.Predictor` (the production code path), and its
decoded output is scored with :func:`vtag.hierarchy.metrics.evaluate`: leaf accuracy, accuracy per
level, hierarchical precision / recall / F1 (micro and macro F1), AU(PRC) of the consistent
scores, and the violation rate of the decoded label sets — overall and per level-1 subtree (rows
whose true primary path starts at that node: :func:`vtag.hierarchy.metrics.evaluate_by_subtree`) and per
uploader group (returning to the training data, known from the replayed days' tags, new:
:mod:`vtag.models.history_groups`, the JSON's ``uploaders``; bundles with uploader profiles). The
report is printed (tables with a one-line legend per metric, or JSON with ``--json``) and saved as
JSON only where ``--out`` says.

Before scoring, the evaluated rows' ``video_id`` are looked up in the bundle's record of its training
and validation rows (:mod:`vtag.models.provenance`): an overlap is printed as a loud warning on stderr and
recorded in the JSON (``overlap``), since metrics on the model's own data overstate it.

Rows are scored as the nightly job meets them when the bundle reads uploader profiles
(``--replay``, the default there; :mod:`vtag.models.replay`): day by day (``dt``, else the upload
date), each day with the bundle's profiles plus the model's own tags of the days before it (score
``>= --min-score``, each counted by its score, or as 1 with ``--count one``), which is what ``vtag
profiles refresh`` hands the next night; never a label.
``--no-replay`` scores every row with the bundle's training-time profiles alone (the figure of a
model whose profiles are never refreshed). The report's ``replay_min_score`` says which (null: no replay).

Progress (#19 item 4): :func:`main` and :func:`evaluate_frame` take an optional ``stage(text, rows)``
callback (models/ never imports jobs/); ``vtag evaluate`` runs through :mod:`vtag.jobs.cli.evaluate`, which
passes :func:`vtag.jobs.progress.stage` in — a live line on a terminal, one stderr line per stage otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

#: a progress callback: ``stage(text, rows)``; the same text again with more rows done updates it
Stage = Callable[[str, int | None], None]


def _no_stage(text: str, rows: int | None = None) -> None:
    return None


def true_labels(taxonomy, frame) -> tuple[np.ndarray, np.ndarray]:
    """``(labels [B, N] bool, leaf [B] int64)`` from the ``labels`` column.

    ``labels`` are the listed known ids closed under ancestors; ``leaf`` is ``labels[0]``'s node
    index (-1 when absent or unknown).
    """
    n = taxonomy.n_nodes
    out = np.zeros((len(frame), n), dtype=bool)
    leaf = np.full(len(frame), -1, dtype=np.int64)
    idx = taxonomy.index
    for i, labels in enumerate(frame["labels"]):
        labels = [] if labels is None else list(labels)
        for j, lab in enumerate(labels):
            k = idx.get(str(lab))
            if k is None:
                continue
            out[i, k] = True
            if j == 0:
                leaf[i] = k
    return taxonomy.close_ancestors(out), leaf


def score_decoded(taxonomy, frame, decoded) -> dict:
    """:func:`vtag.hierarchy.metrics.evaluate` of a :class:`vtag.hierarchy.decode.DecodedBatch` against ``frame``'s labels."""
    from vtag.hierarchy.metrics import evaluate

    truth, leaf = true_labels(taxonomy, frame)
    return _plain(evaluate(taxonomy, truth, leaf, decoded.labels, decoded.leaf, decoded.consistent))


STOP_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def primary_label_nodes(taxonomy, frame) -> list[str] | None:
    """The node ids the rows' primary labels name, in taxonomy order, when some of them is an
    internal node (labels that stop above the leaves); None when all are leaves (or none is known).

    Parameters
    ----------
    taxonomy : Taxonomy
    frame : DataFrame
        Rows with a ``labels`` column (the first label is the primary one).
    """
    idx = taxonomy.index
    nodes = sorted({idx[str(x[0])] for x in frame["labels"] if x is not None and len(x) and str(x[0]) in idx})
    if not nodes or taxonomy.is_leaf[np.asarray(nodes)].all():
        return None
    return [taxonomy.ids[i] for i in nodes]


def choose_decode(taxonomy, frame, prob: np.ndarray, config: Mapping[str, Any]) -> dict:
    """``decode.stop_threshold`` and ``decode.primary`` where the config leaves them ``auto``: the pair
    with the best leaf accuracy (exact primary node) on labeled ``frame`` given the model's
    ``prob [B, N]`` on it. Thresholds come from ``None`` and :data:`STOP_GRID`, rules from
    :data:`vtag.hierarchy.decode.PRIMARY_RULES`; the first of each (always a leaf, the path
    product) is kept unless some primary label of ``frame`` is an internal node and another pair
    does strictly better. A key the config sets to a value is kept as it is.

    Parameters
    ----------
    taxonomy : Taxonomy
    frame : DataFrame
        Validation rows with ``labels``.
    prob : ndarray
        ``[B, N]`` node probabilities of the model on ``frame``.
    config : mapping
        The model config (its other ``decode`` settings are kept).

    Returns
    -------
    dict
        ``{"stop_threshold": float | None, "primary": str}``.
    """
    from vtag.hierarchy.decode import PRIMARY_RULES
    from vtag.models.predictor import decoder_for

    dec = dict(config.get("decode") or {})
    stop, primary = dec.get("stop_threshold"), dec.get("primary") or PRIMARY_RULES[0]
    thresholds = (None, *STOP_GRID) if stop == "auto" else (stop,)
    rules = PRIMARY_RULES if primary == "auto" else (primary,)
    best_key = (rules[0], thresholds[0])
    _, leaf = true_labels(taxonomy, frame)
    known = leaf >= 0
    if known.any() and not taxonomy.is_leaf[leaf[known]].all() and len(thresholds) * len(rules) > 1:
        best = -1.0
        for rule in rules:
            for thr in thresholds:
                cfg = {**dict(config), "decode": {**dec, "stop_threshold": thr, "primary": rule}}
                acc = float(np.mean(decoder_for(taxonomy, cfg).decode(prob).leaf[known] == leaf[known]))
                if acc > best:
                    best_key, best = (rule, thr), acc
    return {"stop_threshold": best_key[1], "primary": best_key[0]}


def _plain(d: Mapping[str, Any]) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, Mapping):
            v = _plain(v)
        out[str(k)] = v
    return out


def _predict(predictor, frame, stage: Stage, replay: float | None = None, replay_count: str = "score"):
    """``(decoded, cover_present, replay info or None)``: ``predictor.predict_scores(frame)``,
    reporting the rows done after each micro-batch; with ``replay`` (a ``min_score``) day by day
    through :func:`vtag.models.replay.replay_scores`, tags counted by ``replay_count``."""
    if replay is not None:
        from vtag.models.replay import replay_scores

        text = f"replaying {len(frame):,} rows day by day"
        stage(text, None)
        done = 0

        def on_day(day: str, rows: int) -> None:
            nonlocal done
            done += rows
            stage(text, done)

        return replay_scores(predictor, frame, replay, replay_count, on_day)
    if len(frame) == 0:
        return (*predictor.predict_scores(frame), None)
    text = f"predicting {len(frame):,} rows"
    stage(text, None)
    probs, covers, done = [], [], 0
    for chunk, prob, cover in predictor.iter_scores(frame):
        probs.append(prob)
        covers.append(cover)
        done += len(chunk)
        stage(text, done)
    return predictor.decoder.decode(np.concatenate(probs)), np.concatenate(covers), None


def evaluate_frame(predictor, frame, stage: Stage | None = None, replay: float | None = None,
                   replay_count: str = "score") -> dict:
    """Metrics overall and per level-1 subtree: ``{"overall": {...}, "subtrees": {id: {...}}, ...}``.

    Parameters
    ----------
    predictor : Predictor
        The loaded bundle.
    frame : DataFrame
        Labeled dump rows. Every row is predicted (and, with ``replay``, counts towards later days'
        profiles, as the nightly job tags it); rows whose primary label is missing or not in the
        taxonomy are not scored, and are counted in the report's ``labels``
        (:func:`vtag.models.data.label_summary`).
    stage : callable, optional
        Progress callback ``stage(text, rows)``: called per stage, and again with the same text as
        prediction's micro-batches finish (rows done).
    replay : float, optional
        Score the rows day by day as the nightly job does, each day with the uploader profiles of
        the bundle plus the predictions (primary score ``>= replay``) of the days before
        (:mod:`vtag.models.replay`); None: every row with the bundle's profiles alone.
    replay_count : {"score", "one"}
        With ``replay``: a counted prediction adds its score (an expected count) or 1.
    """
    from vtag.hierarchy.metrics import evaluate, evaluate_by_subtree
    from vtag.models.data import label_summary

    stage = stage or _no_stage
    tax = predictor.taxonomy
    t0 = time.monotonic()
    decoded, cover, replay_info = _predict(predictor, frame, stage, replay, replay_count)
    seconds = time.monotonic() - t0
    truth, leaf = true_labels(tax, frame)
    scored = leaf >= 0
    if not scored.any():
        raise ValueError(f"none of the {len(frame)} rows has a primary label in taxonomy "
                         f"{tax.label or tax.version}: {label_summary(frame, tax)}")
    stage("scoring", int(scored.sum()))
    truth, leaf = truth[scored], leaf[scored]
    pred_labels, pred_leaf, consistent = decoded.labels[scored], decoded.leaf[scored], decoded.consistent[scored]
    overall = _plain(evaluate(tax, truth, leaf, pred_labels, pred_leaf, consistent))
    tag_history = replay_info.pop("tag_history", None) if replay_info else None
    score = masked_scorer(tax, truth, leaf, pred_labels, pred_leaf, consistent)
    groups = _uploader_groups(predictor, frame, tag_history)
    groups = None if groups is None else groups[scored]
    uploaders = None if groups is None else _by_uploader_history(groups, score)
    subtrees = {}
    by_top = evaluate_by_subtree(tax, truth, leaf, pred_labels, pred_leaf, consistent)
    for top, m in by_top.items():
        subtrees[top] = {**_plain(m), "name": tax.node(top).name}
    return {
        "overall": overall,
        "subtrees": subtrees,
        "uploaders": uploaders,
        "days": _by_day(frame, scored, groups, score),
        "rows": int(len(frame)),
        # rows predicted (and replayed, as the nightly job tags them) but not scored: no known label
        "labels": label_summary(frame, tax),
        "rows_without_cover": int((~cover).sum()),
        "replay_min_score": replay,
        "replay_count": replay_count if replay is not None else None,
        # days replayed, rows whose uploader had a tagged video on an earlier day, tags counted
        "replay": replay_info,
        "predict_seconds": round(seconds, 2),
    }


#: the metrics of the per-group and per-day tables
BRIEF_KEYS = ("leaf_acc", "level1_acc", "hf1")


def masked_scorer(taxonomy, truth, leaf, pred_labels, pred_leaf, consistent, keys=BRIEF_KEYS):
    """``score(mask [B] bool) -> {key: value}``: :func:`vtag.hierarchy.metrics.evaluate`'s ``keys``
    on the rows in ``mask`` of the given ``[B, ...]`` truth and prediction arrays (per uploader
    group, per day).

    Parameters
    ----------
    taxonomy : Taxonomy
    truth, leaf : ndarray
        :func:`true_labels` of the rows: ``[B, n_nodes]`` bool and ``[B]`` primary node.
    pred_labels, pred_leaf, consistent : ndarray
        The decoded predictions of the same rows.
    keys : tuple of str
        The metrics kept.
    """
    from vtag.hierarchy.metrics import evaluate

    def score(m: np.ndarray) -> dict:
        got = _plain(evaluate(taxonomy, truth[m], leaf[m], pred_labels[m], pred_leaf[m], consistent[m]))
        return {k: v for k, v in got.items() if k in keys}

    return score


def _uploader_groups(predictor, frame, tag_history):
    """``[B]`` the rows' uploader groups (:mod:`vtag.models.history_groups`); None where the bundle
    keeps no uploader profiles (no record of its training uploaders)."""
    from vtag.models.history_groups import uploader_history_groups

    table = getattr(predictor.featurizer, "profiles", None)
    if getattr(predictor.featurizer, "profile", None) is None or table is None:
        return None
    return uploader_history_groups(frame, table.profiles, tag_history)


def _by_uploader_history(groups, score) -> dict:
    """The scored rows' metrics per uploader group, with the groups' legend."""
    from vtag.models.history_groups import GROUP_LEGEND, evaluate_by_group

    by_group = evaluate_by_group(groups, score)
    return {"groups": by_group, "legend": {g: GROUP_LEGEND[g] for g in by_group}}


def _by_day(frame, scored, groups, score) -> dict:
    """``{day: {"n", "leaf_acc", "level1_acc", "hf1"[, "returning"]}}`` of the scored rows, by the
    day the nightly job meets them (``dt``, else the upload date: :func:`vtag.models.replay.replay_days`);
    ``returning``: the day's share of rows whose uploader has training rows."""
    from vtag.models.replay import replay_days

    days = replay_days(frame)[scored]
    out = {}
    for day in sorted(set(days.tolist())):
        m = days == day
        out[day] = {"n": int(m.sum()), **score(m)}
        if groups is not None:
            out[day]["returning"] = round(float((groups[m] == "returning").mean()), 4)
    return out


def _arg_parser() -> argparse.ArgumentParser:
    from vtag.models.replay import COUNT_MODES

    p = argparse.ArgumentParser(description="Evaluate a model bundle on a labeled dump (hierarchy/ metrics).")
    p.add_argument("--bundle", required=True, help="model bundle directory")
    p.add_argument("--data", required=True, help="labeled dump root(s), comma-separated")
    p.add_argument("--dates", help="only these dt partitions: days and ranges, comma-separated "
                   "(2023-10-13.., ..2023-10-12, 2023-10-13..2023-10-27)")
    p.add_argument("--limit", type=int, help="only the first N rows")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--taxonomy", help="refuse unless the bundle was trained on this taxonomy file's version")
    p.add_argument("--replay", action=argparse.BooleanOptionalAction, default=None,
                   help="score the rows day by day (dt, else upload date) as the nightly job meets them: each "
                        "day sees the uploader profiles of the bundle plus the model's tags of the "
                        "days before (vtag.models.replay). Default: on when the bundle has the uploader-profile "
                        "input; --no-replay: every row with the bundle's training-time profiles alone")
    p.add_argument("--min-score", type=float, default=0.0,
                   help="with replay: a tag counts towards its uploader's profile when its score is at "
                        "least this (the job conf's profiles.min_score; default 0)")
    p.add_argument("--count", choices=COUNT_MODES, default=COUNT_MODES[0],
                   help="with replay: a counted tag adds its score (an expected count; default) or 1 to its "
                        "uploader's profile (the job conf's profiles.count)")
    p.add_argument("--by-day", action="store_true",
                   help="also print a table per day (the JSON always has 'days'): how a bundle ages after training")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--out", help="also save the JSON report to this file (default: nothing is written)")
    return p


def load_labeled(data: str, dates: str | None = None, limit: int | None = None, what: str = "vtag evaluate"):
    """The rows of the labeled dump root(s) ``data`` (``dates``: only these days), or ``SystemExit``
    with the reason (a missing root, no rows on the days asked for, no ``labels`` column).

    Parameters
    ----------
    data
        Labeled dump root(s), comma-separated.
    dates
        Days and ranges of ``dt`` (:func:`vtag.models.dates.parse_dates`' syntax), or None: every day.
    limit
        Only the first N rows.
    what
        The command named in the error.
    """
    from vtag.models.data import read_dumps

    try:
        frame = read_dumps(data, dates=dates, limit=limit)
    except ValueError as e:  # DumpError included
        raise SystemExit(f"{what}: {e}") from e
    if "labels" not in frame:
        raise SystemExit(f"{what}: {data} has no labels column (a labeled dump is needed)")
    return frame


def evaluate_bundle(bundle: str, frame, *, device: str | None = None, expected_taxonomy_version: str | None = None,
                    replay: bool | None = None, min_score: float = 0.0, count: str = "score",
                    stage: Stage | None = None, what: str = "vtag evaluate", predictor=None,
                    data: str | None = None, dates: str | None = None) -> dict:
    """Load ``bundle`` and score it on the labeled rows ``frame``: ``vtag evaluate``'s report.

    Parameters
    ----------
    bundle
        The bundle directory.
    frame
        Labeled rows (:func:`load_labeled`).
    device
        cpu, cuda, cuda:N, or None (auto).
    expected_taxonomy_version
        Refuse a bundle of another taxonomy version (None: any).
    replay
        Score day by day as the nightly job meets the rows (None: where the bundle reads profiles).
    min_score, count
        With replay: which tags count towards the uploader profiles, and how.
    stage
        Progress callback.
    what
        The command named in errors and warnings.
    predictor
        ``bundle`` already loaded (:class:`vtag.models.predictor.Predictor`), or None: load it here.
    data, dates
        Where ``frame`` came from (labeled dump roots, days), for the error message and the report.

    Returns
    -------
    dict
        ``bundle``, ``data`` and ``dates`` (where ``data`` is given), ``model_version``,
        ``taxonomy_version``, ``overlap`` (the rows the bundle trained or validated on), ``overall``,
        ``subtrees``, ``labels``, ``replay_min_score``, ... and ``legend``.
    """
    from vtag.models.data import label_summary
    from vtag.models.predictor import Predictor
    from vtag.models.provenance import overlap

    stage = stage or _no_stage
    if predictor is None:
        stage(f"loading the bundle {bundle}", None)
        predictor = Predictor.load(bundle, device=device, expected_taxonomy_version=expected_taxonomy_version)
    labels = label_summary(frame, predictor.taxonomy)
    data_name = f"of {data} " if data else ""
    if labels["rows_without_label"] + labels["rows_unknown_label"] == len(frame):
        raise SystemExit(f"{what}: none of the {len(frame)} rows {data_name}has a primary label in the "
                         f"bundle's taxonomy ({predictor.taxonomy_version}): {labels}")
    stage("checking for the bundle's training rows", len(frame))
    seen = overlap(bundle, frame["video_id"] if "video_id" in frame else [])
    if seen["warning"]:
        banner = "!" * 100
        print(f"{banner}\n{what}: WARNING: {bundle}: {seen['warning']}\n{banner}", file=sys.stderr)
    if replay is None:  # the default: as the nightly job meets the rows, where the bundle reads profiles
        replay = getattr(predictor.featurizer, "profile", None) is not None
    report = evaluate_frame(predictor, frame, stage, float(min_score) if replay else None, count)
    report = {
        "bundle": str(bundle),
        **({"data": str(data), "dates": dates} if data is not None else {}),
        "model_version": predictor.model_version,
        "taxonomy_version": predictor.taxonomy_version,
        "overlap": seen,
        **report,
    }
    from vtag.models.evaluate_report import legend

    report["legend"] = legend(list(report["overall"]))
    return report


def main(args: argparse.Namespace, stage: Stage | None = None) -> int:
    """Run ``vtag evaluate``; returns the exit status (the report on stdout, warnings on stderr).

    Parameters
    ----------
    args
        The parsed options of :func:`_arg_parser`.
    stage : callable, optional
        Progress callback ``stage(text, rows)`` (see :func:`evaluate_frame`); default: silent.
    """
    import torch

    from vtag.models.predictor import Predictor

    stage = stage or _no_stage
    if args.threads:
        torch.set_num_threads(int(args.threads))
    expected = None
    if args.taxonomy:
        from vtag.hierarchy.taxonomy import Taxonomy

        expected = Taxonomy.load(args.taxonomy).version
    stage(f"loading the bundle {args.bundle}", None)
    predictor = Predictor.load(args.bundle, device=args.device, expected_taxonomy_version=expected)
    stage(f"reading {args.data}", None)
    frame = load_labeled(args.data, args.dates, args.limit)
    report = evaluate_bundle(args.bundle, frame, predictor=predictor, replay=getattr(args, "replay", None),
                             min_score=args.min_score, count=getattr(args, "count", "score"), stage=stage,
                             data=args.data, dates=args.dates)
    seen = report["overlap"]
    if args.out:
        Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        from vtag.models.evaluate_report import render

        render(report, by_day=bool(getattr(args, "by_day", False)))
        if seen["warning"]:
            print(f"WARNING: {seen['warning']}")
        if args.out:
            print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(_arg_parser().parse_args()))
