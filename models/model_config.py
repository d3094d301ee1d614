"""Model configs as data (no torch): :data:`DEFAULT_CONFIG`, :func:`resolve_config` (a
``conf/model/*.yaml`` deep-merged onto the defaults, unknown keys refused) and the questions the
featurizer and the factory both ask of a resolved config."""

from __future__ import annotations

import copy
from typing import Any

MODALITIES = ("text", "image", "context")

#: ``head.tfidf_wide_mix_rule`` values (``vtag.models.training.post.mix_svm``); the first is the default
MIX_RULES = ("largest_within_se", "nll", "metric")

DEFAULT_CONFIG: dict[str, Any] = {
    "name": "default",
    "modalities": ["text", "image", "context"],
    "text": {
        "encoder": "bow_cnn_attn",
        "max_title_chars": 64,
        "max_desc_chars": 160,
        "max_tokens": 48,
        "hmm": False,
        "vocab": {"min_count": 2, "max_size": 30000, "include_taxonomy_names": True},
        "bow": {"enabled": True, "buckets": 65536, "dim": 64, "mode": "mean", "ngrams": [1, 2],
                "char_ngrams": [], "char_max_chars": 64, "ngram_dropout": 0.0, "min_count": 0,
                "max_rows": 0},
        "cnn": {"enabled": True, "embed_dim": 64, "widths": [2, 3, 4], "channels": 64, "attn_dim": 64},
        "dropout": 0.3,
    },
    "image": {
        "backbone": "mobilenetv3_small_100",
        "input_size": 128,
        "weights_file": None,
        "weights_format": "timm",
        "expect_weights": False,
        "freeze": False,
        "proj_dim": 128,
        "dropout": 0.1,
        "drop_rate": 0.0,
        "skip_absent": True,  # the backbone runs only on rows with a decodable cover (models/image.py)
        "preprocess": {"crop_pct": 1.0, "crop_mode": None, "interpolation": "bilinear", "mean": None, "std": None},
        "train_augment": {"scale": [0.6, 1.0], "hflip": 0.5, "color_jitter": 0.1},
    },
    "context": {
        "dim": 32,
        "uploader_buckets": 50000,
        "program_buckets": 1024,
        "n_hashes": 2,
        "duration_buckets": 16,
        "duration_max_s": 7200,
        "dropout": 0.1,
        "id_dropout": 0.8,
        # uploader profiles (models/profiles.py): the uploader's earlier categories as an input
        "profile": {"enabled": False, "alpha": 1.0, "train_mode": "auto", "dropout": 0.2,
                    "evidence_mix": False, "replay_min_score": 0.0, "replay_count": "score"},
    },
    "fusion": {"name": "lmf", "dim": 128, "rank": 4, "layers": 2, "dropout": 0.5},
    "head": {"name": "dhmcn_v3", "hidden": 256, "local_hidden": 128, "dropout": 0.5, "beta": 0.5, "max_constraint": False,
             "wide": False, "tfidf_wide": False, "tfidf_wide_max_params": 32_000_000,
             "tfidf_wide_uploader": False, "tfidf_wide_refit": True, "tfidf_wide_fit_rows": 0,
             "tfidf_wide_new_uploader_svm": False, "tfidf_wide_mix_rule": "largest_within_se", "temperature": 1.0},
    "loss": {"global": 1.0, "local": 1.0, "fused": 1.0, "violation": 0.1, "leaf": 1.0, "leaf_smoothing": 0.0,
             "modality": 0.3},
    "train": {},
    "decode": {"thresholds": 0.5},
}

#: Sections whose keys are checked against the defaults (typos fail early). ``train``/``decode``
#: belong to the training / decoding code and are passed through.
_STRICT_SECTIONS = ("text", "image", "context", "fusion", "head", "loss")


def _merge(base: dict, over: dict, path: str, strict: bool) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if strict and k not in base:
            raise ValueError(f"model config: unknown key {path}{k!r} (known: {sorted(base)})")
        if isinstance(v, dict) and isinstance(base.get(k), dict) and base.get(k):
            out[k] = _merge(base[k], v, f"{path}{k}.", strict)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_config(config: dict | None) -> dict:
    """``config`` deep-merged onto :data:`DEFAULT_CONFIG`; idempotent. Raises ValueError on unknown
    keys in the model sections and on invalid modality lists. Save the result in bundles."""
    config = config or {}
    out = copy.deepcopy(DEFAULT_CONFIG)
    for k, v in config.items():
        if k in _STRICT_SECTIONS:
            if not isinstance(v, dict):
                raise ValueError(f"model config: section {k!r} must be a mapping")
            out[k] = _merge(DEFAULT_CONFIG[k], v, f"{k}.", strict=True)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, f"{k}.", strict=False)
        else:
            out[k] = copy.deepcopy(v)
    mods = out["modalities"]
    if isinstance(mods, str):
        mods = [mods]
    bad = [m for m in mods if m not in MODALITIES]
    if not mods or bad or len(set(mods)) != len(mods):
        raise ValueError(f"model config: modalities must be a non-empty subset of {MODALITIES}, got {mods}")
    out["modalities"] = [m for m in MODALITIES if m in mods]
    min_count = out["text"]["bow"]["min_count"]
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 0:
        raise ValueError(f"model config: text.bow.min_count must be an integer >= 0, got {min_count!r}")
    max_rows = out["text"]["bow"]["max_rows"]
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 0:
        raise ValueError(f"model config: text.bow.max_rows must be an integer >= 0 (0: no cap), got {max_rows!r}")
    limit = 2**28 if min_count else 2**31 - 1  # with min_count: one int32 counter per bucket while fitting
    if not 1 <= int(out["text"]["bow"]["buckets"]) <= limit:
        raise ValueError(f"model config: text.bow.buckets must be in 1..{limit} (min_count {min_count}), "
                         f"got {out['text']['bow']['buckets']!r}")
    from vtag.models.replay import check_count_settings  # pandas: not at this module's import

    profile = out["context"]["profile"]
    try:
        check_count_settings(float(profile["replay_min_score"]), profile["replay_count"])
    except ValueError as exc:
        raise ValueError(f"model config: context.profile.replay_min_score / replay_count: {exc}") from None
    fit_rows = out["head"]["tfidf_wide_fit_rows"]
    if isinstance(fit_rows, bool) or not isinstance(fit_rows, int) or fit_rows < 0:
        raise ValueError(f"model config: head.tfidf_wide_fit_rows must be an integer >= 0 (0: every training "
                         f"row), got {fit_rows!r}")
    if out["head"]["tfidf_wide_mix_rule"] not in MIX_RULES:
        raise ValueError(f"model config: head.tfidf_wide_mix_rule must be one of {', '.join(MIX_RULES)}, "
                         f"got {out['head']['tfidf_wide_mix_rule']!r}")
    from vtag.hierarchy.decode import PRIMARY_RULES

    primary = (out.get("decode") or {}).get("primary", "path")
    if primary != "auto" and primary not in PRIMARY_RULES:
        raise ValueError(f"model config: decode.primary must be auto or one of {', '.join(PRIMARY_RULES)}, "
                         f"got {primary!r}")
    smoothing = float(out["loss"]["leaf_smoothing"])
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"model config: loss.leaf_smoothing must be in [0, 1), got {smoothing}")
    return out


def wide_modalities(config: dict) -> tuple[str, ...]:
    """Modalities whose encoder output also feeds the head's linear ``wide`` path (``head.wide``):
    every enabled one but the image."""
    return tuple(m for m in config["modalities"] if m != "image") if config["head"].get("wide") else ()


def profile_enabled(config: dict) -> bool:
    """Uploader profiles are a model input: ``context.profile.enabled`` with the context modality on."""
    return "context" in config["modalities"] and bool(config["context"]["profile"]["enabled"])


def wide_profile(config: dict) -> bool:
    """The raw ``profile [B, n_nodes + 2]`` vector also feeds the head's wide path."""
    return profile_enabled(config) and bool(config["head"].get("wide"))
