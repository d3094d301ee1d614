"""Fusion of modality vectors: ``concat``, ``centralnet`` and ``lmf``, plus the missing-modality gate.

Every fusion takes ``dims: {modality: d_m}`` and maps ``{modality: [B, d_m]}`` to a dict with
``h [B, out_dim]``; ``centralnet`` also returns ``modality_h: {modality: [B, out_dim]}`` so the loss
can be multi-task. The modalities present are whatever the config enables (ablations: one alone).
Registry: :data:`FUSIONS` (name -> class), used by :mod:`vtag.models.factory`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class MissingModalityGate(nn.Module):
    """Rows whose modality is absent get a learned placeholder; the presence mask is appended.

    ``x [B, d]``, ``present [B]`` bool -> ``[B, d + 1]`` (last column = 1.0 if present).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.placeholder = nn.Parameter(torch.zeros(dim))
        self.out_dim = dim + 1

    def forward(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        m = present.to(x.dtype).unsqueeze(1)  # [B, 1]
        x = x * m + self.placeholder.to(x.dtype).unsqueeze(0) * (1.0 - m)
        return torch.cat([x, m], dim=1)


class ConcatFusion(nn.Module):
    """Concatenate the modalities -> Linear -> ReLU -> dropout: ``[B, sum d_m] -> [B, dim]``."""

    def __init__(self, dims: dict[str, int], cfg: dict):
        super().__init__()
        self.names = sorted(dims)
        self.out_dim = int(cfg["dim"])
        self.net = nn.Sequential(
            nn.Dropout(float(cfg["dropout"])),
            nn.Linear(sum(dims[n] for n in self.names), self.out_dim),
            nn.ReLU(),
        )

    def forward(self, feats: dict[str, torch.Tensor]) -> dict:
        return {"h": self.net(torch.cat([feats[n] for n in self.names], dim=1))}


class CentralNetFusion(nn.Module):
    """CentralNet (Vielzeuf et al. 2018): one MLP per modality and a central MLP whose layer l
    takes a learned weighted sum of the central state and every modality's layer-l activation.

    ``c_1 = f_1(Σ_m α_{m,1} h_{m,1})``, ``c_{l+1} = f_{l+1}(α_{c,l} c_l + Σ_m α_{m,l+1} h_{m,l+1})``.
    Returns ``h = c_L [B, dim]`` and ``modality_h[m] = h_{m,L} [B, dim]`` (for per-modality losses).
    """

    def __init__(self, dims: dict[str, int], cfg: dict):
        super().__init__()
        self.names = sorted(dims)
        d, n_layers = int(cfg["dim"]), max(int(cfg.get("layers") or 2), 1)
        p = float(cfg["dropout"])
        self.out_dim = d
        self.modality = nn.ModuleDict(
            {
                n: nn.ModuleList(
                    nn.Sequential(nn.Dropout(p), nn.Linear(dims[n] if layer == 0 else d, d), nn.ReLU())
                    for layer in range(n_layers)
                )
                for n in self.names
            }
        )
        self.central = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.ReLU()) for _ in range(n_layers))
        self.alpha_modality = nn.Parameter(torch.ones(n_layers, len(self.names)))
        self.alpha_central = nn.Parameter(torch.ones(n_layers - 1)) if n_layers > 1 else None

    def forward(self, feats: dict[str, torch.Tensor]) -> dict:
        hs = {n: feats[n] for n in self.names}
        c = None
        for layer, central in enumerate(self.central):
            hs = {n: self.modality[n][layer](hs[n]) for n in self.names}
            mixed = sum(self.alpha_modality[layer, i] * hs[n] for i, n in enumerate(self.names))
            if c is not None:
                mixed = mixed + self.alpha_central[layer - 1] * c
            c = central(mixed)
        return {"h": c, "modality_h": hs}


class LowRankFusion(nn.Module):
    """Low-rank Multimodal Fusion (Liu et al. 2018).

    Each modality vector gets a 1 appended, ``z_m = [x_m, 1] [B, d_m + 1]``; rank-r factors
    ``W_m [r, d_m + 1, dim]`` give ``f_m = z_m W_m [B, r, dim]``; the modalities are multiplied
    elementwise, ``f = Π_m f_m``, and summed over the rank with learned weights ``w [r]`` plus a
    bias ``b [dim]``: ``h = Σ_i w_i f[:, i] + b`` — the rank-r decomposition of the tensor-fusion
    weight over ``⊗_m z_m`` without building the outer product.
    """

    def __init__(self, dims: dict[str, int], cfg: dict):
        super().__init__()
        self.names = sorted(dims)
        r, d = int(cfg["rank"]), int(cfg["dim"])
        self.rank, self.out_dim = r, d
        self.drop = nn.Dropout(float(cfg["dropout"]))
        self.factors = nn.ParameterDict({n: nn.Parameter(torch.empty(r, dims[n] + 1, d)) for n in self.names})
        self.rank_weights = nn.Parameter(torch.empty(1, r))
        self.bias = nn.Parameter(torch.zeros(d))
        for p in self.factors.values():
            nn.init.xavier_normal_(p)
        nn.init.xavier_normal_(self.rank_weights)

    def forward(self, feats: dict[str, torch.Tensor]) -> dict:
        prod = None
        for n in self.names:
            x = self.drop(feats[n])
            z = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)  # [B, d_m + 1]
            f = torch.einsum("bi,rio->bro", z, self.factors[n].to(z.dtype))  # [B, r, dim]
            prod = f if prod is None else prod * f
        h = torch.einsum("r,bro->bo", self.rank_weights[0].to(prod.dtype), prod) + self.bias.to(prod.dtype)
        return {"h": h}


FUSIONS: dict[str, Callable[..., nn.Module]] = {
    "concat": ConcatFusion,
    "centralnet": CentralNetFusion,
    "lmf": LowRankFusion,
}


def create_fusion(dims: dict[str, int], cfg: dict) -> nn.Module:
    try:
        cls = FUSIONS[cfg["name"]]
    except KeyError:
        raise ValueError(f"fusion.name must be one of {sorted(FUSIONS)}, got {cfg['name']!r}") from None
    return cls(dims, cfg)
