"""Steps around the loop that read the validation rows once: the coverless-data warning before
training, the frozen TF-IDF SVM fitted before it (``head.tfidf_wide: svm|mix``), and after it the
SVM's weight in the mix, the flat head's temperature, the weight of the uploader profile's evidence
(validation days replayed) and ``decode.stop_threshold`` / ``decode.primary: auto``."""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import numpy as np

log = logging.getLogger(__name__)


def warn_if_coverless(frame, config: Mapping[str, Any]) -> bool:
    """Warn (log + ``UserWarning``) when the config expects covers and no row has one: the image
    branch would train on blank images only, at the cost of most of the run's time. Returns True
    when it warned."""
    import warnings

    if "image" not in config["modalities"] or len(frame) == 0:
        return False
    has = [c for c in ("cover", "cover_uri") if c in frame.columns]
    if any(frame[c].notna().any() for c in has):
        return False
    msg = (f"every training row lacks a cover, but model config {config.get('name')!r} expects images: the image "
           "branch learns nothing and costs most of the training time. Use conf/model/text-context.yaml "
           "(no image modality) for data without covers.")
    log.warning(msg)
    warnings.warn(msg, UserWarning, stacklevel=3)
    return True


def fit_svm_wide(model, featurizer, taxonomy, train_df, val_df, seed: int, c: float | None = None,
                 text_c: float | None = None) -> dict:
    """``head.tfidf_wide: svm|mix``: fit the TF-IDF linear SVM (C on the validation rows, or ``c``;
    the new uploaders' text-only SVM's C likewise, or ``text_c``), frozen before the deep part trains
    (:func:`vtag.models.sparse_wide.fit_linear_svm`). The chosen Cs are kept as
    ``model.tfidf_wide.svm_c`` / ``svm_text_c`` for :func:`refit_svm_wide`; returns the fit's info."""
    import scipy.sparse as sp

    from vtag.models.sparse_wide import fit_linear_svm

    module = model.tfidf_wide
    flat = model.config["head"]["name"] == "flat"
    n_given = len(train_df)
    train_df = svm_fit_rows(train_df, int(model.config["head"]["tfidf_wide_fit_rows"]), seed)

    def xy(frame):
        if len(frame) == 0:
            return None, None
        feats = (featurizer.transform(frame.iloc[i:i + 2048]) for i in range(0, len(frame), 2048))
        parts = [module.features(f["bow_ids"], f.get("uploader"), f.get("uploader_key")) for f in feats]
        return sp.vstack(parts).tocsr(), featurizer.primary_leaf(frame).numpy()

    t0 = time.monotonic()
    x_tr, y_tr = xy(train_df)
    x_va, y_va = xy(val_df)
    # flat: one multi-class SVM whose classes map to the leaf outputs; DHMCN: a binary SVM per node
    # on the head's own targets (vtag.models.node_svm)
    kind = ({"output_class": svm_output_classes(taxonomy, y_tr)} if flat else
            {"node_targets": featurizer.targets(train_df, strict=False).numpy(),
             "leaf_outputs": np.asarray(taxonomy.leaf_indices)})
    if c is not None:
        info = fit_linear_svm(module, x_tr, y_tr, grid=(float(c),), seed=seed, text_c=text_c, **kind)
    else:
        info = fit_linear_svm(module, x_tr, y_tr, x_va, y_va, seed=seed, **kind)
    module.svm_c, module.svm_text_c = info["C"], info.get("text_C")
    log.info("tfidf_wide svm: C=%s validation acc %s (new uploaders' text-only SVM: C=%s, acc %s), %d classes, "
             "%d rows%s, %.1fs", info["C"], info["val_acc"], info.get("text_C"), info.get("text_val_acc"),
             info["classes"], len(train_df), f" of {n_given} (head.tfidf_wide_fit_rows)" if n_given > len(train_df) else "",
             time.monotonic() - t0)
    info["fit_rows"] = len(train_df)
    return info


def svm_fit_rows(frame, n: int, seed: int):
    """The rows the TF-IDF SVM is fitted on under ``head.tfidf_wide_fit_rows`` = ``n``: all of
    ``frame`` when ``n`` is 0 or covers it; else the latest ``n`` by ``upload_ts`` (rows without one
    count as the earliest), or ``n`` rows drawn with ``seed`` when no row has an upload time. The
    SVM's cost grows with rows x outputs (one liblinear problem per class or node, per C tried), so
    at platform scale the linear part learns from the days closest to what the model will tag."""
    if n <= 0 or len(frame) <= n:
        return frame
    import pandas as pd

    if "upload_ts" in frame.columns and frame["upload_ts"].notna().any():
        t = pd.to_datetime(frame["upload_ts"], utc=True).to_numpy(dtype="datetime64[ns]").astype("int64")
        order = np.argsort(t, kind="stable")  # NaT is the smallest int64: the earliest
        keep = np.sort(order[-n:])
    else:
        keep = np.sort(np.random.default_rng(seed).choice(len(frame), size=n, replace=False))
    return frame.iloc[keep].reset_index(drop=True)


def svm_output_classes(taxonomy, label_nodes) -> np.ndarray:
    """``[L]`` int64 (``taxonomy.leaf_indices`` order): the class of the TF-IDF SVM whose margin each
    leaf output takes. The SVM's classes are the label nodes of the training rows (node indices),
    leaves or not: a label that stops at an internal node ("this node, children unknown") is a class
    of its own, as the linear peers have it, not a row left out. A leaf takes the margin of the
    deepest class at or above it (-1: none, the leaf is below every class).

    Parameters
    ----------
    taxonomy : Taxonomy
    label_nodes : ndarray
        ``[n]`` int node index of each training row's primary label (-1: none).
    """
    classes = set(int(j) for j in np.unique(np.asarray(label_nodes)) if j >= 0)
    parent = taxonomy.parent_index
    out = np.full(len(taxonomy.leaf_indices), -1, dtype=np.int64)
    for k, node in enumerate(taxonomy.leaf_indices):
        node = int(node)
        while node >= 0 and node not in classes:
            node = int(parent[node])
        out[k] = node
    return out


def refit_svm_wide(model, featurizer, taxonomy, train_df, val_df, seed: int) -> dict | None:
    """``head.tfidf_wide_refit``: once every choice that reads the validation rows is made, fit the
    SVM again, with the C chosen before, on the training and validation rows together. On data split
    in time the validation rows are the latest ones (the closest to what the model will tag, with the
    uploaders active now): leaving them out of the final fit costs the linear part their evidence.
    Returns the fit's info, or None when no C was chosen (a resumed or warm-started run)."""
    from vtag.models.training.features import concat_frames

    c = getattr(model.tfidf_wide, "svm_c", None)
    if c is None or len(val_df) == 0:
        log.info("tfidf_wide refit skipped (%s)", "no validation rows" if c is not None else "no C chosen in this run")
        return None
    cols = [k for k in ("video_id", "title", "description", "uploader_id", "upload_ts", "labels") if k in train_df.columns]
    rows = concat_frames([train_df[cols], val_df[[k for k in cols if k in val_df.columns]]])
    module = model.tfidf_wide
    device = module.idf.device
    module.cpu()  # the features are built on the CPU (scipy)
    try:
        return fit_svm_wide(model, featurizer, taxonomy, rows, rows.iloc[:0], seed, c=c,
                            text_c=getattr(module, "svm_text_c", None))
    finally:
        module.to(device)


def mix_svm(model, featurizer, taxonomy, val_df, config, dev, settings, channels_last, metric_name) -> dict:
    """``head.tfidf_wide: mix``: the SVM margins' weight in the trained model's logits, chosen on
    the validation rows (:func:`vtag.models.sparse_wide.choose_mix_scale`) by
    ``head.tfidf_wide_mix_rule``: ``largest_within_se``, the largest weight whose top-leaf accuracy
    is within one paired standard error of the best (:func:`vtag.models.calibration.largest_within_se`);
    ``nll``, the lowest log-loss with each weight at its own best temperature
    (:mod:`vtag.models.calibration`); or ``metric``, the early-stopping metric. The recorded
    ``validation`` scores are the top-leaf accuracy, minus the log-loss, or the metric per weight."""
    from vtag.models.calibration import fit_temperature, label_leaf_mask, largest_within_se, top_leaf_correct
    from vtag.models.predictor import infer_proba
    from vtag.models.training.loop import validate

    rule = str(config["head"]["tfidf_wide_mix_rule"])  # checked by resolve_config
    mask = label_leaf_mask(taxonomy, val_df) if rule != "metric" else None
    if mask is not None and not mask.any():
        rule, mask = "metric", None  # no validation row with a known label: nothing to score the leaves on

    flat = config["head"]["name"] == "flat"
    if not flat and rule == "nll":
        raise ValueError("head.tfidf_wide_mix_rule: nll needs head.name: flat (a softmax over the leaves)")
    if not flat and mask is not None:  # what the weights do not change, once
        from vtag.models.evaluate import true_labels
        from vtag.models.predictor import decoder_for

        decoder = decoder_for(taxonomy, config)
        labeled = mask.any(axis=1)
        label = true_labels(taxonomy, val_df)[1][labeled]

    def score():
        if rule == "metric":
            return float(validate(model, featurizer, taxonomy, val_df, config, device=dev,
                                  batch_size=int(settings["eval_batch_size"]), amp=settings["amp"],
                                  channels_last=channels_last)[metric_name])
        if not flat:  # node scores: is the decoded primary node the label or below it
            prob, _ = infer_proba(model, featurizer, val_df, batch_size=int(settings["eval_batch_size"]), device=dev,
                                  amp=settings["amp"], channels_last=channels_last)
            return primary_correct(taxonomy, np.asarray(decoder.decode(prob).leaf)[labeled], label)
        logits, _ = infer_proba(model, featurizer, val_df, batch_size=int(settings["eval_batch_size"]),
                                device=dev, amp=settings["amp"], channels_last=channels_last, output="leaf_logits")
        return -fit_temperature(logits, mask)[1] if rule == "nll" else top_leaf_correct(logits, mask)

    pick = largest_within_se if rule == "largest_within_se" else None  # else the highest score
    info = choose_mix(model.tfidf_wide, score, pick, extend=not flat)
    what = {"largest_within_se": "top-leaf accuracy", "nll": "minus log-loss"}.get(rule, metric_name)
    out = {"scale": info["scale"], "rule": rule}
    for key in ("", "text_"):
        if f"{key}scale" not in info:  # text_: head.tfidf_wide_new_uploader_svm
            continue
        out[f"{key}scale"] = info[f"{key}scale"]
        out[f"{key}validation"] = {str(k): float(np.mean(v)) for k, v in info[f"{key}scores"].items()}
        log.info("tfidf_wide mix (%s): %sscale %s on validation (%s: %s)", rule, key, info[f"{key}scale"], what,
                 {k: round(v, 4) for k, v in out[f"{key}validation"].items()})
    return out


#: mix weights tried after :data:`vtag.models.sparse_wide.MIX_SCALE_GRID` for a DHMCN head whose
#: validation accuracy is still rising at the top of that grid (:func:`rising_at_top`)
DHMCN_EXTRA_SCALES = (96.0, 128.0, 256.0, 512.0, 1024.0)


def choose_mix(module, score, pick=None, extend: bool = False) -> dict:
    """:func:`vtag.models.sparse_wide.choose_mix_scale` over ``MIX_SCALE_GRID``; with ``extend`` (a
    DHMCN head) again over that grid plus :data:`DHMCN_EXTRA_SCALES` when the validation accuracy
    of either weight is still rising at the grid's top. Sigmoid node logits are unbounded: a deep
    part that is confidently wrong can take more than the flat head's largest weight to outweigh."""
    from vtag.models.sparse_wide import MIX_SCALE_GRID, choose_mix_scale

    info = choose_mix_scale(module, score, pick=pick)
    if extend and any(rising_at_top(info[k]) for k in ("scores", "text_scores") if k in info):
        info = choose_mix_scale(module, score, grid=MIX_SCALE_GRID + DHMCN_EXTRA_SCALES, pick=pick)
    return info


def rising_at_top(scores: Mapping[float, Any]) -> bool:
    """Whether the largest weight of ``scores`` (``{weight: correct [R] bool}``) is strictly the most
    accurate one."""
    acc = {k: float(np.mean(v)) for k, v in scores.items()}
    top = max(acc)
    return all(acc[top] > a for k, a in acc.items() if k != top)


def primary_correct(taxonomy, primary: np.ndarray, label: np.ndarray) -> np.ndarray:
    """``[R]`` bool: each decoded primary node (a leaf, or with ``decode.label_nodes`` possibly an
    internal node; -1: none) is the row's ``label`` node or below it — the DHMCN heads' counterpart
    of :func:`vtag.models.calibration.top_leaf_correct`.

    Parameters
    ----------
    taxonomy : Taxonomy
    primary, label : ndarray
        ``[R]`` int node indices of the decoded primary node and of the label.
    """
    onehot = np.zeros((len(primary), taxonomy.n_nodes), dtype=bool)
    onehot[np.arange(len(primary)), primary.clip(0)] = primary >= 0
    at_or_above = taxonomy.close_ancestors(onehot)  # the primary node and its ancestors
    return at_or_above[np.arange(len(primary)), label]


def mix_profile_evidence(model, featurizer, taxonomy, val_df, config, dev, settings, channels_last,
                         metric_name) -> dict:
    """``context.profile.evidence_mix``: the weight of the profile's Naive-Bayes evidence in the
    logits, chosen by the early-stopping metric on the validation rows replayed day by day as the
    nightly job meets them (:func:`vtag.models.profile_mix.choose_evidence_scale`,
    :func:`vtag.models.replay.replay`: the training side's profiles plus the model's own tags of
    earlier validation days, counted with ``context.profile.replay_min_score`` and ``replay_count``)."""
    from vtag.models.evaluate import score_decoded
    from vtag.models.predictor import decoder_for, infer_proba
    from vtag.models.profile_mix import choose_evidence_scale
    from vtag.models.replay import replay

    decoder = decoder_for(taxonomy, config)
    min_score = float(config["context"]["profile"]["replay_min_score"])
    count = str(config["context"]["profile"]["replay_count"])
    batch = int(settings["eval_batch_size"])
    model.eval()

    def score_day(part):
        return infer_proba(model, featurizer, part, batch_size=batch, device=dev, amp=settings["amp"],
                           channels_last=channels_last)

    def score() -> float:
        prob, _, _ = replay(val_df, featurizer.profiles, score_day, decoder, taxonomy, min_score, count=count)
        return float(score_decoded(taxonomy, val_df, decoder.decode(prob))[metric_name])

    info = choose_evidence_scale(model.profile_evidence, score)
    log.info("profile evidence: scale %s on replayed validation days (%s: %s)", info["scale"], metric_name,
             {k: round(v, 4) for k, v in info["scores"].items()})
    return {"scale": info["scale"], "validation": {str(k): v for k, v in info["scores"].items()}}


def calibrate_temperature(model, featurizer, taxonomy, val_df, dev, settings, channels_last) -> dict | None:
    """``head.temperature: auto``: the flat head's temperature with the lowest log-loss of the
    validation rows' labels (:func:`vtag.models.calibration.fit_temperature`), set on the model.
    Returns ``{"temperature", "nll", "nll_at_1"}``, or None without a labeled validation row."""
    from vtag.models.calibration import fit_temperature, label_leaf_mask, mean_nll, set_temperature
    from vtag.models.predictor import infer_proba

    mask = label_leaf_mask(taxonomy, val_df)
    if not mask.any():
        return None
    set_temperature(model, 1.0)
    model.eval()
    logits, _ = infer_proba(model, featurizer, val_df, batch_size=int(settings["eval_batch_size"]), device=dev,
                            amp=settings["amp"], channels_last=channels_last, output="leaf_logits")
    temperature, nll = fit_temperature(logits, mask)
    set_temperature(model, temperature)
    out = {"temperature": temperature, "nll": nll, "nll_at_1": mean_nll(logits, mask)}
    log.info("head.temperature auto -> %.4g (validation log-loss %.4f, %.4f at 1)", temperature, nll, out["nll_at_1"])
    return out


def auto_decode(model, featurizer, taxonomy, val_df, config, dev, settings, channels_last) -> dict:
    """``decode.stop_threshold: auto`` / ``decode.primary: auto`` resolved on the validation rows (see
    :func:`vtag.models.evaluate.choose_decode`): ``{"stop_threshold", "primary"}``; without
    validation rows, always a leaf by the path product."""
    from vtag.models.evaluate import choose_decode
    from vtag.models.predictor import infer_proba

    if len(val_df) == 0:
        return {"stop_threshold": None, "primary": "path"}
    model.eval()
    prob, _ = infer_proba(model, featurizer, val_df, batch_size=int(settings["eval_batch_size"]), device=dev,
                          amp=settings["amp"], channels_last=channels_last)
    out = choose_decode(taxonomy, val_df, prob, config)
    log.info("decode auto -> stop_threshold %s, primary %s (validation)", out["stop_threshold"], out["primary"])
    return out


def shipped_validation(model, featurizer, taxonomy, val_df, config, dev, settings, channels_last) -> dict | None:
    """The validation rows' metrics of the model as its bundle ships it: after the choices made on
    these rows (the SVM mix, the temperature, the profile evidence, the decoding; so they flatter it
    a little), before the SVM's refit on them, with uploader profiles replayed day by day as ``vtag
    evaluate`` scores them (:func:`vtag.models.replay.replay`), then also per uploader group
    (``uploaders``: :mod:`vtag.models.history_groups`). The best epoch's own metrics are of the
    trained network alone. None without validation rows.
    """
    from vtag.models.evaluate import masked_scorer, score_decoded, true_labels
    from vtag.models.factory import profile_enabled
    from vtag.models.history_groups import evaluate_by_group, uploader_history_groups
    from vtag.models.predictor import decoder_for, infer_proba
    from vtag.models.replay import replay

    if len(val_df) == 0:
        return None
    decoder = decoder_for(taxonomy, config)
    model.eval()

    def score_day(part):
        return infer_proba(model, featurizer, part, batch_size=int(settings["eval_batch_size"]), device=dev,
                           amp=settings["amp"], channels_last=channels_last)

    replayed = profile_enabled(config) and featurizer.profiles is not None
    if replayed:
        prof = config["context"]["profile"]
        prob, _, info = replay(val_df, featurizer.profiles, score_day, decoder, taxonomy,
                               float(prof["replay_min_score"]), count=str(prof["replay_count"]))
    else:
        prob, _ = score_day(val_df)
    decoded = decoder.decode(prob)
    out = {**score_decoded(taxonomy, val_df, decoded), "replayed": bool(replayed)}
    if replayed:  # the training side's uploaders: its profiles (vtag evaluate's groups)
        groups = uploader_history_groups(val_df, featurizer.profiles.profiles, info["tag_history"])
        score = masked_scorer(taxonomy, *true_labels(taxonomy, val_df), decoded.labels, decoded.leaf,
                              decoded.consistent)
        out["uploaders"] = evaluate_by_group(groups, score)
    log.info("validation as shipped: leaf_acc %.4f hf1 %.4f%s", out["leaf_acc"], out["hf1"],
             " (days replayed)" if replayed else "")
    return out
