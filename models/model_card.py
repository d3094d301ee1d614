"""``MODEL_CARD.md`` of a bundle (#19 item 6): YAML front matter in the Hugging Face model-card style
(library, tags, datasets, license, taxonomy, metrics with their values in ``model-index``), a usage
snippet, metric definitions, the training data and budget, and prominent warnings when the model was
trained on synthetic data (``vtag generate`` dumps), with a randomly initialised image backbone, or
stopped on its time budget. Written by :func:`vtag.models.bundle.save_bundle`; no torch import here.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Mapping

import yaml

#: metric -> definition (the card's "Metrics" section; the same words as ``vtag evaluate``'s legend)
METRIC_DEFINITIONS: dict[str, str] = {
    "leaf_acc": "share of videos whose predicted primary node is exactly the true one",
    "levelN_acc": "share of videos whose predicted level-N node is the true one",
    "hp": "hierarchical precision: of the predicted nodes (ancestors included), the share that are true",
    "hr": "hierarchical recall: of the true nodes (ancestors included), the share that were predicted",
    "hf1": "hierarchical F1: harmonic mean of hp and hr over all videos pooled (micro)",
    "hf1_macro": "hierarchical F1 averaged per video (macro)",
    "auprc": "area under the precision-recall curve of the consistent node scores, all nodes pooled",
    "violations": "share of videos whose decoded label set breaks a taxonomy constraint (should be 0)",
}
LICENSE = "other"  # the repository's terms; the training data's terms apply to the weights


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _g(v: Any) -> str:
    return f"{float(v):.4g}"


def _brief(v: Any) -> str:
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={_brief(x)}" for k, x in v.items() if not isinstance(x, Mapping))
    return str(v)


def synthetic_roots(train: Mapping[str, Any]) -> list[str]:
    """The training data roots written by ``vtag generate`` (a day's ``_manifest.json`` names the
    generator), among the comma-separated ``train["data"]``.

    Parameters
    ----------
    train
        The bundle's ``bundle.train`` record.
    """
    out = []
    for root in str(train.get("data") or "").split(","):
        root = root.strip()
        if not root or "://" in root:
            continue
        for manifest in sorted(glob.glob(os.path.join(root, "dt=*", "_manifest.json")))[:1]:
            try:
                if "generator_version" in json.loads(open(manifest, encoding="utf-8").read()):
                    out.append(root)
            except (OSError, ValueError):
                continue
    return out


def warnings_for(config: Mapping[str, Any]) -> list[str]:
    """The card's warnings: synthetic training data, random image weights, a time-budget stop.

    Parameters
    ----------
    config
        The bundle's config (with its ``bundle:`` section).
    """
    train = (config.get("bundle") or {}).get("train") or {}
    image = config.get("image") or {}
    modalities = config.get("modalities") or []
    out = []
    synthetic = synthetic_roots(train)
    if synthetic:
        out.append(f"**Trained on synthetic data** ({', '.join(synthetic)}, written by `vtag generate`): the "
                   "metrics below say how well it learned the generator, not real uploads. Do not tag real "
                   "videos with it.")
    if (not modalities or "image" in modalities) and image and not image.get("weights_file"):
        out.append(f"**Random image weights**: the `{image.get('backbone')}` backbone started from a random "
                   "initialisation (`image.weights_file` not set), so the cover contributes little beyond colour.")
    if train.get("stopped") == "time_budget":
        out.append(f"**Stopped on its time budget** after {train.get('epochs', '?')} epoch(s) "
                   f"({train.get('seconds', '?')} s): it did not converge; train longer for a usable model.")
    return out


def front_matter(config: Mapping[str, Any], taxonomy, val: Mapping[str, Any]) -> str:
    """The YAML front matter block (``---`` ... ``---``) in the Hugging Face model-card style.

    Parameters
    ----------
    config
        The bundle's config.
    taxonomy
        The bundle's taxonomy.
    val
        The validation metrics.
    """
    b = config.get("bundle") or {}
    train = b.get("train") or {}
    datasets = [r.strip() for r in str(train.get("data") or "").split(",") if r.strip()]
    shown = val.get("shipped") or val  # the model as shipped, where the run recorded it
    metric_keys = [k for k in ("leaf_acc", "hp", "hr", "hf1", "hf1_macro", "auprc", "violations") if k in shown]
    meta = {
        "library_name": "vtag",
        "pipeline_tag": "text-classification",
        "license": LICENSE,
        "language": ["zh"],
        "tags": ["hierarchical-classification", "multimodal", "video-tagging", "pytorch"],
        "datasets": datasets or ["(not recorded)"],
        "metrics": metric_keys,
        "taxonomy": {"label": taxonomy.label or "", "version": taxonomy.version},
        "model_version": b.get("model_version"),
        "synthetic_training_data": bool(synthetic_roots(train)),
        "model-index": [{
            "name": f"vtag {b.get('model_label') or ''}".strip(),
            "results": [{
                "task": {"type": "text-classification", "name": "hierarchical video type tagging"},
                "dataset": {"name": ", ".join(datasets) or "(not recorded)", "type": "vtag-dump",
                            "split": f"validation ({split_text(train.get('validation_split'))})"},
                "metrics": [{"type": k, "name": k, "value": round(float(shown[k]), 4)} for k in metric_keys],
            }],
        }],
    }
    return "---\n" + yaml.safe_dump(meta, allow_unicode=True, sort_keys=False) + "---"


def _group_rows(groups: Mapping[str, Any] | None) -> list[str]:
    """The as-shipped table's extra rows: leaf accuracy per uploader group (returning to the training
    side, known from the replayed days' tags, new)."""
    return [f"| leaf_acc, {g} uploaders ({m.get('rows', 0)} rows) | {_fmt(m['leaf_acc'])} | |"
            for g, m in (groups or {}).items() if "leaf_acc" in m]


def split_text(split: Mapping[str, Any] | None) -> str:
    """The validation rows in words, from the bundle's ``train.validation_split`` record
    (:func:`vtag.models.provenance.describe_split`; bundles from before it: "held-out rows").

    Parameters
    ----------
    split
        The record, or None.
    """
    if not split:
        return "held-out rows"
    rows, returning = int(split.get("rows", 0)), float(split.get("returning", 0.0))
    days = f", {split['first']} .. {split['last']}" if split.get("first") else ""
    if split.get("kind") == "later":
        return f"the latest {rows} rows by upload time{days}; {returning:.0%} from uploaders with training rows"
    if split.get("kind") == "held_out_uploaders":
        return f"{rows} rows of uploaders held out of training"
    return f"{rows} rows{days}; {returning:.0%} from uploaders with training rows"


def choices_made(metrics: Mapping[str, Any]) -> list[str]:
    """The "Chosen on the validation rows" section's lines (none when nothing was chosen): the SVM's
    mix weights, the head's temperature, the profile evidence's weight and the stop threshold.

    Parameters
    ----------
    metrics
        ``metrics.json``'s content (its ``tfidf_mix``, ``temperature``, ``profile_evidence``,
        ``stop_threshold``, ``decode_primary``, ``label_nodes``, as the training run records them).
    """
    out = []
    mix = metrics.get("tfidf_mix")
    if mix:
        text = f", new uploaders' text-only SVM {_g(mix['text_scale'])}" if "text_scale" in mix else ""
        rule = {"nll": "lowest validation log-loss",
                "largest_within_se": "the largest weight not clearly less accurate on validation than the best",
                }.get(mix.get("rule"), "best early-stopping metric")
        out.append(f"- TF-IDF SVM's weight in the logits: {_g(mix['scale'])}{text} ({rule})")
    cal = metrics.get("temperature")
    if cal:
        out.append(f"- head temperature: {_g(cal['temperature'])} (validation log-loss {_g(cal['nll'])}, "
                   f"{_g(cal['nll_at_1'])} at 1): scores are calibrated on the validation rows")
    ev = metrics.get("profile_evidence")
    if ev:
        out.append(f"- uploader profile's evidence weight: {_g(ev['scale'])} (validation days replayed)")
    if metrics.get("stop_threshold") is not None:
        out.append(f"- decode stop threshold: {_g(metrics['stop_threshold'])}")
    if metrics.get("label_nodes"):
        out.append(f"- primary node: one of the {metrics['label_nodes']} nodes the training labels name "
                   "(some labels stop above the leaves)")
    if metrics.get("decode_primary") == "top_leaf":
        out.append("- primary node: on the path of the top-scoring leaf (not the best path product)")
    return ["", "## Chosen on the validation rows", ""] + out if out else []


def model_card(config: Mapping[str, Any], taxonomy, metrics: Mapping[str, Any]) -> str:
    """The ``MODEL_CARD.md`` text (generated from the config, taxonomy and metrics).

    Parameters
    ----------
    config
        The bundle's config with its ``bundle:`` section (identity and ``train`` record).
    taxonomy
        The taxonomy the model was trained on.
    metrics
        ``metrics.json``'s content (``validation`` holds the held-out metrics).
    """
    b = config.get("bundle", {})
    tr = b.get("train", {})
    val = metrics.get("validation", metrics)
    lines = [
        front_matter(config, taxonomy, val),
        "",
        f"# vtag model {b.get('model_label') or ''} `{b.get('model_version')}`".replace("  ", " "),
        "",
    ]
    warnings = warnings_for(config)
    if warnings:
        lines += ["> [!WARNING]"] + [f"> - {w}" for w in warnings] + [""]
    lines += [
        "Hierarchical type tags for short Chinese user-generated videos: a multimodal model (title and "
        "description text, cover image, upload context) with a hierarchical classification head, "
        "decoded into a label set consistent with the taxonomy.",
        "",
        "## Usage",
        "",
        "```python",
        "import pandas as pd",
        "from vtag.models import Predictor",
        "",
        "p = Predictor.load(\"<this bundle directory>\", device=\"cpu\")",
        "rows = pd.DataFrame([{\"video_id\": \"v1\", \"title\": \"猫咪第一次见到雪\", \"description\": None, \"cover\": None,",
        "                      \"uploader_id\": \"up1\", \"source_program\": None, \"duration_s\": 42}])",
        "print(p.predict(rows)[[\"video_id\", \"leaf_id\", \"path_names\", \"score\"]])",
        "```",
        "",
        "```bash",
        "vtag tag --date 2026-11-20 --bundle <this bundle directory>   # one day of a dump into video_tags",
        "vtag evaluate --bundle <this bundle directory> --data <held-out labeled dump>",
        "```",
        "",
        "## Identity",
        f"- model version: `{b.get('model_version')}` (content hash of weights + config), label: "
        f"{b.get('model_label') or '-'}",
        f"- created: {b.get('created_at')}",
        f"- taxonomy: {taxonomy.label or '-'} version `{taxonomy.version}` — {taxonomy.n_nodes} nodes, "
        f"{len(taxonomy.leaf_ids)} leaves, depth {taxonomy.max_depth}",
        "",
        "## Architecture",
        f"- text: {_brief(config.get('text'))}",
        f"- image: {_brief(config.get('image'))}",
        f"- context: {_brief(config.get('context'))}",
        f"- fusion: {_brief(config.get('fusion'))}",
        f"- head: {_brief(config.get('head'))}",
        f"- decoding thresholds: {_brief((config.get('decode') or {}).get('thresholds', 0.5))}",
        "",
        "## Training data and budget",
    ]
    if tr:
        for k in ("data", "dates_selected", "dates", "rows", "train_rows", "val_rows", "uploaders", "epochs", "steps",
                  "seconds", "seed", "device", "stopped"):
            if k in tr:
                lines.append(f"- {k.replace('_', ' ')}: {_brief(tr[k])}")
        if tr.get("repeated_videos"):
            lines.append(f"- rows dropped as earlier copies of a video (the latest row of each video_id is kept): "
                         f"{tr['repeated_videos']}")
        if tr.get("validation_videos_in_training"):
            lines.append(f"- training rows dropped because their video is in the validation data: "
                         f"{tr['validation_videos_in_training']}")
        if tr.get("rows_dropped"):
            top = ", ".join(f"`{k}` {v}" for k, v in (tr.get("unknown_labels") or {}).items())
            lines.append(f"- rows dropped (no label, or a primary label outside the taxonomy): {tr['rows_dropped']}"
                         + (f"; most frequent unknown labels: {top}" if top else ""))
        ids = tr.get("ids") or {}
        for part in ("train", "validation"):
            if part in ids:
                lines.append(f"- {part} video ids: {ids[part]['count']} (sha256 `{ids[part]['sha256'][:16]}…`; "
                             f"`vtag evaluate` warns when evaluated rows are among them)")
    else:
        lines.append("- (not recorded)")
    lines += ["", f"## Validation metrics ({split_text(tr.get('validation_split'))})", ""]
    shipped = val.get("shipped") if val else None
    if val:
        keys = [k for k in ("n", "leaf_acc", "hp", "hr", "hf1", "hf1_macro", "auprc", "violations") if k in val]
        keys += sorted(k for k in val if k.startswith("level") and k.endswith("_acc"))
        if shipped:
            lines += ["| metric | as shipped | the network alone (best epoch) |", "|---|---|---|"]
            lines += [f"| {k} | {_fmt(shipped.get(k, '-'))} | {_fmt(val[k])} |" for k in keys]
            lines += _group_rows(shipped.get("uploaders"))
            lines += ["", "*As shipped*: with the settings chosen on these rows (below), so a little flattered"
                      + (", uploader profiles replayed day by day as `vtag evaluate` does" if shipped.get("replayed")
                         else "") + "; `vtag evaluate` on later labeled days gives the unbiased figure."]
        else:
            lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(val[k])} |" for k in keys]
    else:
        lines.append("(none)")
    lines += choices_made(metrics)
    lines += ["", "## Metric definitions", ""]
    lines += [f"- **{k}**: {text}" for k, text in METRIC_DEFINITIONS.items()]
    lines += [
        "",
        "## Intended use",
        "Nightly batch tagging of short UGC videos in the vtag Spark jobs (`vtag.models.Predictor`), for "
        "recommendation, search and analytics. Tags are suggestions with scores; downstream uses "
        "should respect the `score` and the taxonomy version.",
        "",
        "## Limits",
        "- Only the taxonomy version above: tagging against another version is refused unless the job "
        "explicitly allows it (then re-tag after a taxonomy change).",
        "- Trained on the data listed above; titles in other languages, very short titles and videos "
        "without covers score lower. Metrics are on held-out rows of the same source and may not "
        "transfer to other sources or periods.",
        "- Labels follow the training labels' biases; rare leaves are learned poorly.",
        "",
    ]
    return "\n".join(lines)
