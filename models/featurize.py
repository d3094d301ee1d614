"""Featurizer: a pandas frame of dump rows -> a dict of CPU tensors the model consumes.

Every tensor has the batch as its first dimension, so a batch can be sliced (``{k: v[i:j]}``) or
concatenated (``torch.cat`` per key) freely. Keys (see docs/model.md):

==================  ==================  =====================================================
key                 shape, dtype        meaning
==================  ==================  =====================================================
``text_ids``        [B, L] int64        vocab ids: title tokens, ``<sep>``, description tokens
``bow_ids``         [B, 2L] int64       hashed uni/bi-gram buckets, 0 = pad
``text_feats``      [B, 11] float32     engineered text features (``vtag.models.text.TEXT_FEATURES``)
``image``           [B, 3, H, W] f32    normalized cover (zeros when missing); only if image on
``cover_present``   [B] bool            the cover decoded (always present)
``uploader``        [B, K] int64        hashed uploader id buckets, 0 = null
``uploader_key``    [B] int64           exact 62-bit uploader key, 0 = null (``head.tfidf_wide_uploader: exact``)
``program``         [B, K] int64        hashed source program buckets, 0 = null
``duration``        [B] int64           duration bucket, 0 = null
``profile``         [B, 2N+2] float32   uploader profile (``context.profile.enabled``; models/profiles.py)
==================  ==================  =====================================================

Text keys are present when the text modality is enabled, context keys with context, ``image`` with
image. Every input column may be missing or null in any row.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from vtag.models.context import ContextFeaturizer, key_set, uploader_keys
from vtag.models.image import CoverPreprocessor, cover_bytes, cover_decodable
from vtag.models.model_config import profile_enabled, resolve_config
from vtag.models.profiles import ProfileFeaturizer, ProfileTable
from vtag.models.text import (
    SPECIAL_TOKENS,
    TextFeaturizer,
    as_text,
    build_vocab,
    count_ngram_keys,
    taxonomy_words,
    tokenize,
)


def _column(frame: pd.DataFrame, name: str) -> Sequence:
    if name in frame.columns:
        return frame[name].tolist()
    return [None] * len(frame)


def _label_list(cell) -> list:
    """A ``labels`` cell as a list: list / tuple / numpy array as is, a string as one id, null -> []."""
    if isinstance(cell, str):
        return [cell]
    if isinstance(cell, (list, tuple, np.ndarray)):
        return list(cell)
    return []


class Featurizer:
    """Turns dump rows into model inputs for one taxonomy and resolved config.

    ``vocab``: the token list (index = id), starting with ``<pad>, <unk>, <sep>``; build it with
    :meth:`fit`, save it as ``vocab.txt`` one token a line.
    """

    def __init__(self, taxonomy, config: dict, vocab: Sequence[str], ngram_keys=None):
        self.taxonomy = taxonomy
        self.config = resolve_config(config)
        self.modalities = tuple(self.config["modalities"])
        vocab = list(vocab) if vocab else list(SPECIAL_TOKENS)
        self.text = TextFeaturizer(self.config["text"], vocab, taxonomy_words(taxonomy))
        self.image = CoverPreprocessor(self.config["image"]) if "image" in self.modalities else None
        self.context = ContextFeaturizer(self.config["context"])
        self.ngram_df, self.n_docs = None, 0
        #: ``[U]`` sorted uploader keys with their own SVM columns (``head.tfidf_wide_uploader: exact``;
        #: set from the labeled rows before the model is built, or from a bundle's weights)
        self.uploader_keys: np.ndarray | None = None
        self.exact_uploaders = ("context" in self.modalities and bool(self.config["head"]["tfidf_wide"])
                                and self.config["head"]["tfidf_wide_uploader"] == "exact")
        self.profile = None
        if profile_enabled(self.config):
            self.profile = ProfileFeaturizer(taxonomy, float(self.config["context"]["profile"]["alpha"]))
        if ngram_keys is not None:
            self.text.set_ngram_keys(ngram_keys)

    # ------------------------------------------------------------------ building
    @classmethod
    def fit(cls, taxonomy, config: dict, frame: pd.DataFrame) -> Featurizer:
        """Build the vocabulary from ``frame``'s titles and descriptions (training rows only), and with
        ``text.bow.min_count`` > 0 the kept n-gram buckets: those in at least that many rows (at most
        ``text.bow.max_rows`` of them, the most frequent)."""
        cfg = resolve_config(config)
        tcfg, vcfg = cfg["text"], cfg["text"]["vocab"]
        always: list[str] = []
        if "text" in cfg["modalities"]:
            probe = TextFeaturizer(tcfg, list(SPECIAL_TOKENS), taxonomy_words(taxonomy))
            tokenizer, hmm = probe.tokenizer, bool(tcfg["hmm"])
            tokens: Iterable[list[str]] = (
                tokenize(tokenizer, as_text(t), int(tcfg["max_title_chars"]), hmm)
                + tokenize(tokenizer, as_text(d), int(tcfg["max_desc_chars"]), hmm)
                for t, d in zip(_column(frame, "title"), _column(frame, "description"))
            )
            if vcfg["include_taxonomy_names"]:
                always = [w for name in taxonomy_words(taxonomy) for w in tokenize(tokenizer, name, 64, hmm)]
            vocab = build_vocab(tokens, int(vcfg["min_count"]), int(vcfg["max_size"]), always)
        else:
            vocab = list(SPECIAL_TOKENS)
        keys = df = None
        bow = cfg["text"]["bow"]
        if "text" in cfg["modalities"] and bow["enabled"] and int(bow["min_count"]) > 0:
            keys, df = count_ngram_keys(probe, _column(frame, "title"), _column(frame, "description"),
                                        int(bow["min_count"]), int(bow["max_rows"]), return_counts=True)
        out = cls(taxonomy, cfg, vocab, ngram_keys=keys)
        out.ngram_df, out.n_docs = df, len(frame)  # idf of a fresh sparse wide path (models/sparse_wide.py)
        return out

    def fit_uploader_keys(self, frame: pd.DataFrame, max_keys: int = 0) -> None:
        """``head.tfidf_wide_uploader: exact``: the uploaders of ``frame`` (labeled rows) that get SVM
        columns (at most ``max_keys``, the most frequent); a no-op in other configs."""
        if self.exact_uploaders:
            self.uploader_keys = key_set(uploader_keys(_column(frame, "uploader_id")), max_keys)

    @property
    def ngram_keys(self) -> np.ndarray | None:
        """``[K]`` int64 kept n-gram buckets (``text.bow.min_count`` > 0), else None."""
        return self.text.ngram_keys if "text" in self.modalities else None

    @property
    def vocab(self) -> list[str]:
        return list(self.text.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.text.vocab)

    @property
    def image_data_config(self) -> dict | None:
        """The resolved timm data config (input_size, mean, std, ...) or None without images."""
        return dict(self.image.data_config) if self.image is not None else None

    # ------------------------------------------------------------------ transforming
    def transform(self, frame: pd.DataFrame, train: bool = False, *, pool=None, channels_last: bool = False,
                  decode_covers: bool = True) -> dict[str, torch.Tensor]:
        """Rows -> CPU tensors (keys in the module docstring).

        Parameters
        ----------
        frame : pandas.DataFrame
            Dump rows; every column optional.
        train : bool
            Apply the image training augmentation (random); the default is deterministic.
        pool : concurrent.futures.Executor, optional
            Threads for the cover decode + resize (eval only; same result).
        channels_last : bool
            ``image`` NHWC in memory (same values).
        decode_covers : bool
            False (image modality on): leave ``image`` and ``cover_present`` out — the caller decodes
            the covers itself (the GPU decoder, :mod:`vtag.models.image_gpu`).
        """
        out: dict[str, torch.Tensor] = {}
        if "text" in self.modalities:
            t = self.text.transform(_column(frame, "title"), _column(frame, "description"))
            out.update({k: torch.from_numpy(v) for k, v in t.items()})
        covers = _column(frame, "cover")
        if self.image is not None:
            if decode_covers:
                image, present = self.image(covers, train=train, pool=pool, channels_last=channels_last)
                out["image"], out["cover_present"] = image, present
        else:
            out["cover_present"] = torch.tensor([cover_decodable(cover_bytes(c)) for c in covers], dtype=torch.bool)
        if "context" in self.modalities:
            c = self.context.transform(
                _column(frame, "uploader_id"), _column(frame, "source_program"), _column(frame, "duration_s")
            )
            out.update({k: torch.from_numpy(v) for k, v in c.items()})
            if self.exact_uploaders:
                out["uploader_key"] = torch.from_numpy(uploader_keys(_column(frame, "uploader_id")))
        if self.profile is not None:
            out["profile"] = torch.from_numpy(self.profile.transform(frame))
        return out

    @property
    def profiles(self) -> ProfileTable | None:
        """The uploader profiles used for rows without their own profile columns (the bundle's)."""
        return self.profile.table if self.profile is not None else None

    @profiles.setter
    def profiles(self, table: ProfileTable | None) -> None:
        if self.profile is not None:
            self.profile.table = table

    def targets(self, frame: pd.DataFrame, strict: bool = True) -> torch.Tensor:
        """``labels`` column -> ``[B, n_nodes]`` float32: 1 for the labels closed under ancestors, 0 for
        known negatives, -1 for *unknown* nodes — the strict descendants of a label none of whose
        children is labeled (a partial label: "this node, children unknown"; the loss skips them).
        A row labeled at leaves has no -1.

        An unknown node id raises ValueError (``strict=False``: ignored).
        """
        index = self.taxonomy.index
        y = np.zeros((len(frame), self.taxonomy.n_nodes), dtype=bool)
        for i, labels in enumerate(_column(frame, "labels")):
            for node_id in _label_list(labels):
                j = index.get(str(node_id))
                if j is None:
                    if strict:
                        raise ValueError(
                            f"row {i}: label {node_id!r} is not in taxonomy {self.taxonomy.label} "
                            f"(version {self.taxonomy.version})"
                        )
                    continue
                y[i, j] = True
        y = self.taxonomy.close_ancestors(y)
        return torch.from_numpy(y.astype(np.float32) - unknown_below(self.taxonomy, y).astype(np.float32))

    def primary_leaf(self, frame: pd.DataFrame) -> torch.Tensor:
        """``[B]`` int64 node index of ``labels[0]`` (-1 when absent or unknown)."""
        out = np.full(len(frame), -1, dtype=np.int64)
        for i, labels in enumerate(_column(frame, "labels")):
            labels = _label_list(labels)
            if labels:
                out[i] = self.taxonomy.index.get(str(labels[0]), -1)
        return torch.from_numpy(out)


def unknown_below(taxonomy, labels: np.ndarray) -> np.ndarray:
    """``[B, N]`` bool: nodes below a *terminal* label (a labeled node with no labeled child) —
    unknown, not negative. ``labels``: ancestor-closed ``[B, N]`` bool."""
    labels = np.asarray(labels, dtype=bool)
    parent = taxonomy.parent_index
    child = np.flatnonzero(parent >= 0)
    has_labeled_child = np.zeros_like(labels)
    if child.size:
        onehot = np.zeros((child.size, taxonomy.n_nodes), dtype=np.float32)
        onehot[np.arange(child.size), parent[child]] = 1.0
        has_labeled_child = (labels[:, child].astype(np.float32) @ onehot) > 0
    terminal = labels & ~has_labeled_child & ~taxonomy.is_leaf[None, :]
    if not terminal.any():
        return np.zeros_like(labels)
    strict = taxonomy.ancestor_matrix() & ~np.eye(taxonomy.n_nodes, dtype=bool)
    return ((terminal.astype(np.float32) @ strict.astype(np.float32)) > 0) & ~labels


def collate(batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate transformed batches key by key."""
    return {k: torch.cat([b[k] for b in batches], dim=0) for k in batches[0]}


def to_device(batch: Mapping[str, Any], device, channels_last: bool | None = None, non_blocking: bool = True,
              pin: bool = False) -> dict[str, Any]:
    """Move a featurized batch to ``device``: the one device transfer of training and inference.

    Parameters
    ----------
    batch : mapping
        Featurized tensors (``[B, ...]`` each); other values pass through.
    device : str or torch.device
        Target device. A tensor already there is not copied.
    channels_last : bool or None
        4-D floating tensors (``image [B, 3, H, W]``): True -> NHWC memory, False -> NCHW contiguous,
        None -> the layout they come in (nothing else changes it later: ``decode.channels_last`` /
        ``train.channels_last`` decide here).
    non_blocking : bool
        Asynchronous host-to-GPU copies (they overlap only from pinned memory).
    pin : bool
        Pin CPU tensors first when the target is CUDA (a prefetch thread usually pinned them already).
    """
    device = torch.device(device)
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            if pin and device.type == "cuda" and v.device.type == "cpu" and not v.is_pinned():
                v = v.pin_memory()
            v = v.to(device, non_blocking=non_blocking)
            if channels_last is not None and v.dim() == 4 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        out[k] = v
    return out


def pin_batch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Every CPU tensor of ``batch`` in pinned (page-locked) memory, for non-blocking GPU copies.

    Parameters
    ----------
    batch : mapping
        Featurized tensors (other values pass through).
    """
    return {k: v.pin_memory() if isinstance(v, torch.Tensor) and v.device.type == "cpu" else v
            for k, v in batch.items()}


def describe(batch: dict[str, torch.Tensor]) -> str:
    """One line per key: shape and dtype (for logs)."""
    return "\n".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in sorted(batch.items()))


__all__ = ["Featurizer", "collate", "to_device", "pin_batch", "describe", "as_text"]
