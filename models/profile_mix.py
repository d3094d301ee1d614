"""The uploader profile's Naive-Bayes evidence in the final logits (``context.profile.evidence_mix``).

The profile input (:mod:`vtag.models.profiles`) carries, per node, the log-ratio of the uploader's
smoothed share of that node to the node's prior: ``log((count + alpha q) / (n_videos + alpha)) -
log q``, 0 for an empty profile. The deep part reads it, but with the fitted SVM mixed in at a large
weight (``head.tfidf_wide: mix``) the deep logits move the decision little, and the text-only SVM
that scores a new uploader's rows knows nothing of the uploader. Yet a new uploader's history is
exactly what the nightly job builds day after day from the model's own tags.

:class:`ProfileEvidence` adds ``scale * log-ratio`` at the head's outputs (leaves for ``flat``,
every node for the DHMCN heads) to the logits, as a Naive-Bayes update of the model's odds. The
scale is not learned by back-propagation (it is 0 while the model trains) but chosen after training
by :func:`choose_evidence_scale`, on the validation rows **replayed day by day as the nightly job
meets them** (:func:`vtag.models.replay.replay`): each validation day sees the training side's
profiles plus the model's tags of the validation days before it (each by its score), never a
validation label. So the weight fits the profiles production will hand the model (partly its own
predictions), not label profiles, which are cleaner and would ask for a larger weight. The scale is a buffer: it
travels in the bundle's weights.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

#: candidate scales of the evidence (0 = not used); the log-ratios are a few units at most
EVIDENCE_SCALE_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)


class ProfileEvidence(nn.Module):
    """``profile [B, 2N + 2]`` -> ``scale * profile[:, N + out_nodes]`` ``[B, n_out]`` (None while the
    scale is 0).

    Parameters
    ----------
    n_nodes : int
        N, the taxonomy's nodes (the profile's layout: shares ``[0, N)``, log-ratios ``[N, 2N)``).
    out_nodes : sequence of int
        ``[n_out]`` node index of each head output (the leaves for ``flat``, ``0..N-1`` otherwise).
    """

    def __init__(self, n_nodes: int, out_nodes):
        super().__init__()
        idx = torch.as_tensor(out_nodes, dtype=torch.long) + int(n_nodes)
        self.register_buffer("columns", idx)
        self.register_buffer("scale", torch.tensor(0.0))

    def forward(self, profile: torch.Tensor | None) -> torch.Tensor | None:
        if profile is None or float(self.scale) == 0.0:
            return None
        return self.scale * profile.index_select(1, self.columns).to(torch.float32)


@torch.no_grad()
def choose_evidence_scale(module: ProfileEvidence, score: Callable[[], float],
                          grid: tuple[float, ...] = EVIDENCE_SCALE_GRID) -> dict:
    """Set ``module.scale`` to the grid value whose ``score()`` is highest (ties keep the smaller).

    Parameters
    ----------
    module : ProfileEvidence
    score : callable
        ``score() -> float``: the validation metric with the scale as set (higher is better).
    grid : tuple of float
        Candidate scales.

    Returns
    -------
    dict with ``scale`` (the chosen one) and ``scores`` (``{scale: metric}``).
    """
    from vtag.models.sparse_wide import search_grid

    best, scores = search_grid([module.scale], score, grid)
    return {"scale": best, "scores": scores}
