"""The model bundle: one directory that is everything needed to tag videos (DESIGN.md, "Model bundle").

Files, and nothing pickled:

- ``model.safetensors`` — the weights only (safetensors header metadata: model and taxonomy version);
- ``config.yaml`` — the resolved model config (``vtag.models.factory.resolve_config``: architecture,
  ``train``/``decode`` sections), ``preprocessing.image`` (the resolved timm data config) plus a ``bundle:`` section with the identity (model
  version and label, taxonomy version, creation time, training data);
- ``vocab.txt`` — the text vocabulary, one token per line (``\\``, newline and CR escaped as
  ``\\\\``, ``\\n``, ``\\r``);
- ``taxonomy.yaml`` — the exact taxonomy the model was trained on (``version`` inside);
- ``metrics.json`` — validation metrics and the training history;
- ``MODEL_CARD.md`` — what it was trained on, when, metrics per level, intended use, limits;
- ``uploader_profiles.parquet`` — only with ``context.profile.enabled``: the uploader profiles of
  the bundle's own training labels (:mod:`vtag.models.profiles`), used by ``Predictor`` for rows that
  bring no profile of their own; its sha256 is recorded under ``profiles:`` in ``config.yaml``, so it
  is part of the model version.

The **model version** is a content hash of the weights (names, dtypes, shapes, bytes, in sorted
name order) and of the config without its ``bundle:`` section; a human label travels beside it.
:func:`load_bundle` recomputes both hashes and refuses a bundle whose files disagree with them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
VOCAB = "vocab.txt"
TAXONOMY = "taxonomy.yaml"
METRICS = "metrics.json"
CARD = "MODEL_CARD.md"
BUNDLE_FILES = (WEIGHTS, CONFIG, VOCAB, TAXONOMY, METRICS, CARD)


class BundleError(ValueError):
    """A bundle directory is incomplete, inconsistent or corrupt."""


class BundleTaxonomyMismatch(ValueError):  # noqa: N818 - the contract's name (vtag.models.BundleTaxonomyMismatch)
    """The bundle was trained on another taxonomy version than the one the caller expects.

    The one exception of the bundle-vs-taxonomy check (:func:`check_bundle_taxonomy`), raised by
    ``vtag tag``, ``vtag retag run`` and ``Predictor.load``; ``vtag.models.predictor.TaxonomyMismatchError``
    and ``vtag.jobs.pipeline.tag.BundleMismatchError`` are aliases of it.
    """


@dataclass(frozen=True)
class BundleMeta:
    """Identity of a bundle (the ``bundle:`` section of its ``config.yaml``)."""

    path: str
    model_version: str
    model_label: str
    taxonomy_version: str
    taxonomy_label: str
    created_at: str
    extra: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- hashing
def _canonical_config(config: Mapping[str, Any]) -> str:
    body = {k: v for k, v in config.items() if k != "bundle"}
    return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def state_dict_tensors(model) -> dict:
    """``model.state_dict()`` as contiguous CPU tensors that share no storage (safetensors needs it)."""
    out = {}
    for k, v in model.state_dict().items():
        out[k] = v.detach().to("cpu").contiguous().clone()
    return out


def weights_hash(tensors: Mapping[str, Any]) -> hashlib._Hash:
    """A sha256 over ``{name: tensor}`` in sorted name order (name, dtype, shape, raw bytes)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(name.encode("utf-8"))
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(-1).view(dtype=_byte_dtype()).numpy().tobytes() if t.numel() else b"")
    return h


def _byte_dtype():
    import torch

    return torch.uint8


def model_version(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """16 hex chars: the content hash of weights + config (less the ``bundle:`` section)."""
    h = weights_hash(tensors)
    h.update(b"\0config\0")
    h.update(_canonical_config(config).encode("utf-8"))
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------- vocab
def _escape(token: str) -> str:
    return token.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(line: str) -> str:
    out, i = [], 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            nxt = line[i + 1]
            out.append({"n": "\n", "r": "\r", "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def write_vocab(path: str | Path, vocab: list[str]) -> None:
    Path(path).write_text("".join(_escape(t) + "\n" for t in vocab), encoding="utf-8")


def read_vocab(path: str | Path) -> list[str]:
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    return [_unescape(line) for line in lines]


# ---------------------------------------------------------------------- save
def save_bundle(
    out_dir: str | Path,
    *,
    config: Mapping[str, Any],
    taxonomy,
    featurizer,
    model,
    metrics: Mapping[str, Any],
    label: str = "",
    train_info: Mapping[str, Any] | None = None,
) -> BundleMeta:
    """Write a bundle to ``out_dir`` atomically (a temp dir beside it, then renamed into place).

    ``config`` is the model config as trained; the featurizer's resolved preprocessing (if it has
    ``preprocessing()``) is stored under ``preprocessing:``. ``train_info`` (data roots, row counts,
    epochs, seconds, seed...) goes to the ``bundle:`` section and the model card; its ``ids`` entry
    (:func:`vtag.models.provenance.data_ids`) leaves count and hash there and its Bloom filters in
    ``data_ids.json``, for ``vtag evaluate``'s overlap check. Existing bundle
    files in ``out_dir`` are replaced; other files there (e.g. ``checkpoint/``) are kept.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from vtag.models.factory import resolve_config

    cfg = resolve_config({k: v for k, v in dict(config).items() if k not in ("bundle", "preprocessing", "profiles")})
    data_cfg = getattr(featurizer, "image_data_config", None)
    cfg["preprocessing"] = {"image": _plain(data_cfg) if data_cfg else None}
    tensors = state_dict_tensors(model)
    profiles = getattr(featurizer, "profiles", None)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out_dir))
    names = list(BUNDLE_FILES)
    if profiles is not None:
        from vtag.models.profiles import PROFILE_FILE

        cfg["profiles"] = {"file": PROFILE_FILE, "sha256": profiles.save(tmp / PROFILE_FILE, taxonomy),
                           "uploaders": len(profiles)}
        names.append(PROFILE_FILE)
    version = model_version(tensors, cfg)
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    from vtag.models.provenance import IDS_FILE, split_ids_record

    info, ids_record = split_ids_record(_plain(dict(train_info or {})))
    if ids_record is not None:  # the Bloom filters of the training/validation ids: their own file
        (tmp / IDS_FILE).write_text(json.dumps(ids_record), encoding="utf-8")
        names.append(IDS_FILE)
    cfg["bundle"] = {
        "model_version": version,
        "model_label": label or "",
        "taxonomy_version": taxonomy.version,
        "taxonomy_label": taxonomy.label,
        "created_at": created,
        "format": 1,
        "train": info,
    }
    try:
        save_file(
            tensors,
            str(tmp / WEIGHTS),
            metadata={"format": "pt", "model_version": version, "taxonomy_version": taxonomy.version},
        )
        (tmp / CONFIG).write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
        write_vocab(tmp / VOCAB, list(featurizer.vocab))
        taxonomy.dump(tmp / TAXONOMY)
        (tmp / METRICS).write_text(json.dumps(_plain(metrics), ensure_ascii=False, indent=2), encoding="utf-8")
        (tmp / CARD).write_text(model_card(cfg, taxonomy, metrics), encoding="utf-8")
        mode = 0o666 & ~_umask()
        for name in names:
            os.chmod(tmp / name, mode)  # safetensors writes 0600; executors may run as other users
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return BundleMeta(
        path=str(out_dir),
        model_version=version,
        model_label=label or "",
        taxonomy_version=taxonomy.version,
        taxonomy_label=taxonomy.label,
        created_at=created,
        extra=info,
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _plain(obj: Any) -> Any:
    """numpy / torch scalars and tuples -> plain YAML/JSON types."""
    import numpy as np

    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "item") and hasattr(obj, "numel") and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------------- model card
def model_card(config: Mapping[str, Any], taxonomy, metrics: Mapping[str, Any]) -> str:
    """The ``MODEL_CARD.md`` text: :func:`vtag.models.model_card.model_card` (front matter, usage, metric
    definitions, training data and budget, warnings).

    Parameters
    ----------
    config
        The bundle's config with its ``bundle:`` section.
    taxonomy
        The taxonomy the model was trained on.
    metrics
        ``metrics.json``'s content.
    """
    from vtag.models.model_card import model_card as write_card

    return write_card(config, taxonomy, metrics)


# ---------------------------------------------------------------------- load
def read_meta(bundle_dir: str | Path) -> BundleMeta:
    """The bundle's identity from its ``config.yaml`` (cheap: no torch, no weights)."""
    bundle_dir = Path(bundle_dir)
    cfg = _read_config(bundle_dir)
    return _meta(bundle_dir, cfg)


def check_bundle_taxonomy(
    bundle_dir: str | Path,
    expected: Any,
    *,
    allow: bool = False,
    role: str = "expected",
    hint: str = "or allow the mismatch explicitly",
) -> BundleMeta:
    """The one bundle-vs-taxonomy compatibility check; returns the bundle's :class:`BundleMeta`.

    Reads only the bundle's ``config.yaml`` (its recorded ``taxonomy_version``), never the taxonomy
    file. ``expected``: a version string, an object with ``.version`` (a ``Taxonomy``), or None (no
    check). A different version raises :class:`BundleTaxonomyMismatch` unless ``allow`` (then a
    warning is logged). ``role`` names the expected version in the message (``the job's``, ``the
    target``), ``hint`` says how to allow a mismatch where the caller can.
    """
    import logging

    meta = read_meta(bundle_dir)
    if expected is None:
        return meta
    want = str(getattr(expected, "version", expected))
    if want != meta.taxonomy_version:
        label = f" ({meta.taxonomy_label})" if meta.taxonomy_label else ""
        msg = (f"bundle {bundle_dir} was trained on taxonomy version {meta.taxonomy_version}{label}, "
               f"not the {role} version {want}: retrain, pick a bundle trained on that taxonomy, {hint}")
        if not allow:
            raise BundleTaxonomyMismatch(msg)
        logging.getLogger(__name__).warning("%s (allowed)", msg)
    return meta


def bundle_model_version(bundle_dir: str | Path) -> str:
    """The recorded model version of a bundle (reads ``config.yaml`` only)."""
    return read_meta(bundle_dir).model_version


def _read_config(bundle_dir: Path) -> dict:
    missing = [n for n in BUNDLE_FILES if not (bundle_dir / n).is_file()]
    if missing:
        raise BundleError(f"bundle {bundle_dir}: missing {missing}")
    try:
        cfg = yaml.safe_load((bundle_dir / CONFIG).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BundleError(f"bundle {bundle_dir}: {CONFIG} is not valid YAML: {exc}") from exc
    if not isinstance(cfg, dict) or "bundle" not in cfg:
        raise BundleError(f"bundle {bundle_dir}: {CONFIG} has no 'bundle' section")
    return cfg


def _meta(bundle_dir: Path, cfg: Mapping[str, Any]) -> BundleMeta:
    b = cfg["bundle"]
    return BundleMeta(
        path=str(bundle_dir),
        model_version=str(b["model_version"]),
        model_label=str(b.get("model_label") or ""),
        taxonomy_version=str(b["taxonomy_version"]),
        taxonomy_label=str(b.get("taxonomy_label") or ""),
        created_at=str(b.get("created_at") or ""),
        extra=dict(b.get("train") or {}),
    )


#: Weights key of the kept n-gram buckets (``text.bow.min_count`` > 0): the featurizer's half of
#: the n-gram table travels with the rows it indexes, in ``model.safetensors``.
NGRAM_KEYS = "encoders.text.bow.ngram_keys"
#: Weights key of the uploaders with their own SVM columns (``head.tfidf_wide_uploader: exact``).
UPLOADER_KEYS = "tfidf_wide.uploader_keys"


def ngram_keys_of(tensors: Mapping[str, Any]):
    """The kept n-gram buckets ``[K]`` (numpy int64) in a state dict, or None."""
    t = tensors.get(NGRAM_KEYS)
    return None if t is None else t.cpu().numpy()


def ngram_keys_in_file(weights: str | Path):
    """The kept n-gram buckets in a ``.safetensors`` file, or None — only that tensor is read."""
    from safetensors import safe_open

    with safe_open(str(weights), "np") as fh:
        return fh.get_tensor(NGRAM_KEYS) if NGRAM_KEYS in fh.keys() else None


def load_bundle(bundle_dir: str | Path, device: str | None = "cpu", *, verify: bool = True):
    """Load a bundle -> ``(config, taxonomy, featurizer, model, meta)``.

    ``model`` is in eval mode on ``device``. With ``verify`` (default), the taxonomy file's version
    and the weights+config hash must match the recorded ones, else :class:`BundleError`.
    """
    import torch
    from safetensors.torch import load_file

    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.factory import create_model
    from vtag.models.featurize import Featurizer

    bundle_dir = Path(bundle_dir)
    cfg = _read_config(bundle_dir)
    meta = _meta(bundle_dir, cfg)
    taxonomy = Taxonomy.load(bundle_dir / TAXONOMY)
    if verify and taxonomy.version != meta.taxonomy_version:
        raise BundleError(
            f"bundle {bundle_dir}: {TAXONOMY} has version {taxonomy.version}, the bundle records "
            f"{meta.taxonomy_version} (the file was edited?)"
        )
    vocab = read_vocab(bundle_dir / VOCAB)
    try:
        tensors = load_file(str(bundle_dir / WEIGHTS), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise BundleError(f"bundle {bundle_dir}: cannot read {WEIGHTS}: {exc}") from exc
    body = {k: v for k, v in cfg.items() if k != "bundle"}
    if verify:
        got = model_version(tensors, body)
        if got != meta.model_version:
            raise BundleError(
                f"bundle {bundle_dir}: weights+config hash {got} != recorded model version "
                f"{meta.model_version} (files changed after saving?)"
            )
    # the bundle's weights replace any pretrained file named in the config: none is read here
    featurizer = Featurizer(taxonomy, body, vocab, ngram_keys=ngram_keys_of(tensors))
    if UPLOADER_KEYS in tensors:  # head.tfidf_wide_uploader: exact
        featurizer.uploader_keys = tensors[UPLOADER_KEYS].cpu().numpy()
    if body.get("profiles"):
        featurizer.profiles = _load_profiles(bundle_dir, body["profiles"], taxonomy.version, verify)
    model = create_model(body, taxonomy, featurizer, pretrained=False)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise BundleError(
            f"bundle {bundle_dir}: weights do not fit the model built from {CONFIG}: "
            f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}"
        )
    model.eval()
    if device is not None:
        model.to(torch.device(device))
    return cfg, taxonomy, featurizer, model, meta


def _load_profiles(bundle_dir: Path, spec: Mapping[str, Any], taxonomy_version: str, verify: bool):
    """The bundle's :class:`vtag.models.profiles.ProfileTable` (sha256 checked with ``verify``)."""
    from vtag.models.profiles import ProfileTable

    path = bundle_dir / str(spec.get("file"))
    if not path.is_file():
        raise BundleError(f"bundle {bundle_dir}: missing {path.name} (config.yaml names it under profiles:)")
    if verify and hashlib.sha256(path.read_bytes()).hexdigest() != spec.get("sha256"):
        raise BundleError(f"bundle {bundle_dir}: {path.name} does not match its recorded sha256 (file changed?)")
    try:
        return ProfileTable.load(path, taxonomy_version)
    except Exception as exc:  # pyarrow errors, a profile of another taxonomy version
        raise BundleError(f"bundle {bundle_dir}: cannot read {path.name}: {exc}") from exc
