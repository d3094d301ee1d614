"""The model side of vtag (``vtag.models``): featurization, the fused DHMCN model, training, the bundle
and :class:`Predictor` — pandas in, pandas out; the only thing the Spark job calls.

``from vtag.models import Predictor`` is the DESIGN contract's entry point
(``Predictor.load(bundle, device)``). It is imported on first use, so importing ``vtag.models`` (or a
light module such as ``vtag.models.schema``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from vtag.models.predictor import Predictor

__all__ = ["BundleTaxonomyMismatch", "Predictor", "check_bundle_taxonomy"]


def __getattr__(name: str) -> Any:
    if name in ("BundleTaxonomyMismatch", "check_bundle_taxonomy"):
        from vtag.models import bundle

        return getattr(bundle, name)
    if name == "Predictor":
        from vtag.models.predictor import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
