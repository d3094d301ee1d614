"""The model factory: registries and :class:`VtagModel`.

Variants are data: a YAML file under ``conf/model/`` (documented key by key in docs/model.md) is
deep-merged onto :data:`~vtag.models.model_config.DEFAULT_CONFIG` by
:func:`~vtag.models.model_config.resolve_config`, and :func:`create_model` builds
the encoders of the enabled ``modalities``, the fusion (:data:`vtag.models.fusion.FUSIONS`) and the head
(:data:`vtag.models.dhmcn.HEADS`) named there. Text encoders are looked up in :data:`TEXT_ENCODERS`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from vtag.models.model_config import (  # noqa: F401  (re-exported: the factory's public names)
    DEFAULT_CONFIG,
    MODALITIES,
    profile_enabled,
    resolve_config,
    wide_modalities,
    wide_profile,
)


# ---------------------------------------------------------------------------------------- registries
def _bow_cnn_attn(cfg: dict, vocab_size: int, ngram_keys=None) -> nn.Module:
    from vtag.models.text import TextEncoder

    return TextEncoder(cfg, vocab_size, ngram_keys=ngram_keys)


#: text encoder name -> builder(text_cfg, vocab_size, ngram_keys) returning a module with ``out_dim``
#: (``ngram_keys``: the featurizer's kept n-gram buckets, or None; see ``text.bow.min_count``).
TEXT_ENCODERS: dict[str, Callable[..., nn.Module]] = {"bow_cnn_attn": _bow_cnn_attn}


class VtagModel(nn.Module):
    """Encoders of the enabled modalities -> fusion -> hierarchical head.

    ``forward(batch)`` (the dict of :meth:`vtag.models.featurize.Featurizer.transform`, on the model's
    device) returns the head's outputs — always ``prob [B, n_nodes]`` in taxonomy node order — plus
    for centralnet ``modality_logits_<m> [B, n_nodes]``. ``loss(outputs, targets [B, n_nodes])`` is
    the weighted sum of :meth:`loss_terms`.
    """

    def __init__(self, config: dict, encoders: dict[str, nn.Module], fusion: nn.Module, head: nn.Module,
                 image_gate: nn.Module | None, modality_heads: dict[str, nn.Module] | None,
                 tfidf_wide: nn.Module | None = None, profile_evidence: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.modalities = tuple(config["modalities"])
        self.encoders = nn.ModuleDict(encoders)
        self.image_gate = image_gate
        self.fusion = fusion
        self.head = head
        self.modality_heads = nn.ModuleDict(modality_heads or {})
        self.modality_weight = float(config["loss"]["modality"])
        self.wide_modalities = wide_modalities(config)
        self.wide_profile = wide_profile(config)
        self.tfidf_wide = tfidf_wide
        self.profile_evidence = profile_evidence
        self.profile_dropout = float(config["context"]["profile"].get("dropout") or 0.0) if profile_enabled(config) else 0.0

    @property
    def n_nodes(self) -> int:
        return self.head.n_nodes

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality vectors ``{m: [B, d_m]}``; image rows without a cover are replaced by the
        learned placeholder and the presence flag is appended."""
        feats = {m: self.encoders[m](batch) for m in self.modalities}
        if "image" in feats:
            feats["image"] = self.image_gate(feats["image"], batch["cover_present"])
        return feats

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.training and self.profile_dropout > 0 and "profile" in batch:
            # a share of the training rows looks like a new uploader's, so the text side must carry
            # them too (else it learns little wherever the history already explains the label)
            keep = torch.rand(batch["profile"].shape[0], 1, device=batch["profile"].device) >= self.profile_dropout
            batch = {**batch, "profile": batch["profile"] * keep.to(batch["profile"].dtype)}
        feats = self.encode(batch)
        fused = self.fusion(feats)
        extra = (self.tfidf_wide(batch["bow_ids"], batch.get("uploader"), batch.get("uploader_key"))
                 if self.tfidf_wide is not None else None)
        if self.profile_evidence is not None:
            evidence = self.profile_evidence(batch.get("profile"))
            if evidence is not None:
                extra = evidence if extra is None else extra + evidence
        if self.wide_modalities:
            wide = [feats[m] for m in self.wide_modalities] + ([batch["profile"]] if self.wide_profile else [])
            out = dict(self.head(fused["h"], torch.cat(wide, dim=1), extra_logits=extra))
        else:
            out = dict(self.head(fused["h"], extra_logits=extra))
        for m, h in (fused.get("modality_h") or {}).items():
            if m in self.modality_heads:
                out[f"modality_logits_{m}"] = self.modality_heads[m](h)
        return out

    def loss_terms(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        from vtag.models.dhmcn import split_targets

        terms = self.head.loss_terms(outputs, targets)
        y, known = split_targets(targets)
        if self.modality_weight:
            for m in self.modality_heads:
                key = f"modality_logits_{m}"
                if key in outputs:
                    with torch.autocast(device_type=targets.device.type, enabled=False):
                        terms[f"modality_{m}"] = self.modality_weight * nn.functional.binary_cross_entropy_with_logits(
                            outputs[key].float(), y, weight=known
                        )
        return terms

    def loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        return sum(self.loss_terms(outputs, targets).values())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def predict_proba(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eval-mode ``prob [B, n_nodes]`` (float32, on the model's device); the batch is moved
        there; the module's train/eval mode is restored afterwards."""
        from vtag.models.featurize import to_device

        was_training = self.training
        self.eval()
        try:  # layout as given: the caller's transfer (to_device) decided channels-last
            return self(to_device(batch, self.device, channels_last=None))["prob"].float()
        finally:
            self.train(was_training)

    def prepare_for(self, device: str | torch.device) -> VtagModel:
        """Move to ``device``; on CUDA the image backbone goes channels_last."""
        device = torch.device(device)
        self.to(device)
        if device.type == "cuda" and "image" in self.encoders:
            self.encoders["image"].backbone.to(memory_format=torch.channels_last)
        return self


def create_model(config: dict, taxonomy, featurizer, pretrained: bool = True, spec=None) -> VtagModel:
    """Build a :class:`VtagModel` for ``taxonomy`` (or an explicit :class:`HierarchySpec` ``spec``).

    ``featurizer`` supplies the vocabulary size (and the kept n-gram keys, ``text.bow.min_count``).
    ``pretrained=False`` skips loading
    ``image.weights_file`` (use it when the weights come from a bundle next).
    """
    from vtag.models.context import ContextEncoder
    from vtag.models.dhmcn import HierarchySpec, create_head
    from vtag.models.fusion import MissingModalityGate, create_fusion
    from vtag.models.image import ImageEncoder

    cfg = resolve_config(config)
    mods = cfg["modalities"]
    encoders: dict[str, nn.Module] = {}
    if "text" in mods:
        name = cfg["text"]["encoder"]
        if name not in TEXT_ENCODERS:
            raise ValueError(f"text.encoder must be one of {sorted(TEXT_ENCODERS)}, got {name!r}")
        encoders["text"] = TEXT_ENCODERS[name](cfg["text"], featurizer.vocab_size,
                                               ngram_keys=getattr(featurizer, "ngram_keys", None))
    if "image" in mods:
        encoders["image"] = ImageEncoder(cfg["image"], pretrained=pretrained)
    profile_dim = 2 * taxonomy_nodes(taxonomy, spec) + 2 if profile_enabled(cfg) else 0
    if "context" in mods:
        encoders["context"] = ContextEncoder(cfg["context"], profile_dim=profile_dim)
    dims = {m: int(e.out_dim) for m, e in encoders.items()}
    gate = None
    if "image" in encoders:
        gate = MissingModalityGate(dims["image"])
        dims["image"] = gate.out_dim
    fusion = create_fusion(dims, cfg["fusion"])
    spec = spec if spec is not None else HierarchySpec.from_taxonomy(taxonomy)
    loss_weights = {k: float(v) for k, v in cfg["loss"].items() if k != "modality"}
    wide_dim = sum(dims[m] for m in wide_modalities(cfg)) + (profile_dim if wide_profile(cfg) else 0)
    head = create_head(cfg["head"], spec, int(fusion.out_dim), loss_weights=loss_weights, wide_dim=wide_dim)
    if wide_profile(cfg):
        init_profile_evidence(head, spec, wide_dim - profile_dim)
    tfidf = None
    if cfg["head"]["tfidf_wide"]:
        keys = getattr(featurizer, "ngram_keys", None)
        if "text" not in mods or keys is None:
            raise ValueError("head.tfidf_wide needs the text modality with text.bow.min_count > 0 (kept n-grams)")
        from vtag.models.sparse_wide import TfidfWide

        mode = cfg["head"]["tfidf_wide"]
        if mode not in (True, "svm", "mix"):
            raise ValueError(f"head.tfidf_wide must be false, true, svm or mix, got {mode!r}")
        # flat: leaf logits (svm / mix: one multi-class SVM); DHMCN: node logits (one SVM per node)
        n_out = int(spec.leaves.size) if cfg["head"]["name"] == "flat" else spec.n_nodes
        tfidf = TfidfWide(int(np.asarray(keys).size), n_out, int(cfg["head"]["tfidf_wide_max_params"]),
                          df=getattr(featurizer, "ngram_df", None), n_docs=int(getattr(featurizer, "n_docs", 0)),
                          fitted=mode == "svm", mix=mode == "mix",
                          **_uploader_columns(cfg, featurizer))
    evidence = None
    if profile_dim and cfg["context"]["profile"]["evidence_mix"]:
        from vtag.models.profile_mix import ProfileEvidence

        flat = cfg["head"]["name"] == "flat"
        evidence = ProfileEvidence(spec.n_nodes, spec.leaves if flat else np.arange(spec.n_nodes))
    modality_heads = None
    if cfg["fusion"]["name"] == "centralnet" and float(cfg["loss"]["modality"]) > 0:
        modality_heads = {m: nn.Linear(int(fusion.out_dim), spec.n_nodes) for m in mods}
    return VtagModel(cfg, encoders, fusion, head, gate, modality_heads, tfidf_wide=tfidf, profile_evidence=evidence)


@torch.no_grad()
def init_profile_evidence(head: nn.Module, spec, offset: int) -> None:
    """Start the wide path's weights on the profile's log-ratio block (``profile[N:2N]``, at
    ``offset`` in the wide input) at the identity from node to its own logit: the model starts from
    the Naive-Bayes update ``logit += log p(node | uploader) - log p(node)`` and learns how far to
    trust it (flat head: leaf logits; DHMCN heads: node logits)."""
    n = spec.n_nodes
    w = head.wide.weight  # [n_out, wide_dim]
    if w.shape[0] == n:
        nodes = torch.arange(n)
    else:
        nodes = torch.as_tensor(spec.leaves, dtype=torch.long)
    w[torch.arange(w.shape[0]), offset + n + nodes] = 1.0


def taxonomy_nodes(taxonomy, spec=None) -> int:
    """Number of nodes of ``taxonomy`` (or of an explicit ``spec``)."""
    return int(spec.n_nodes) if spec is not None else int(taxonomy.n_nodes)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _uploader_columns(cfg: dict, featurizer) -> dict:
    """TfidfWide's uploader arguments for ``head.tfidf_wide_uploader``: false -> none, true -> the
    hashed ids (``context.uploader_buckets``), ``exact`` -> the featurizer's uploader keys (and
    ``head.tfidf_wide_new_uploader_svm``)."""
    mode = cfg["head"]["tfidf_wide_uploader"]
    if mode not in (False, True, "exact"):
        raise ValueError(f"head.tfidf_wide_uploader must be false, true or exact, got {mode!r}")
    if not mode or "context" not in cfg["modalities"]:
        return {}
    gate = bool(cfg["head"]["tfidf_wide_new_uploader_svm"])
    if mode == "exact":
        keys = getattr(featurizer, "uploader_keys", None)
        return {"uploader_keys": np.zeros(0, dtype=np.int64) if keys is None else keys, "new_uploader_svm": gate}
    if gate:
        raise ValueError("head.tfidf_wide_new_uploader_svm needs head.tfidf_wide_uploader: exact (hashed ids give "
                         "every uploader a column, so no row counts as new)")
    return {"uploader_buckets": int(cfg["context"]["uploader_buckets"])}
