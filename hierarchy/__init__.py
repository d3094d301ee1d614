"""The taxonomy library: loading and validation, consistent decoding, version diffs, metrics.

Pure Python + numpy (no Spark, no torch). The names below are the public surface; the modules
(``vtag.hierarchy.taxonomy``, ``.decode``, ``.diff``, ``.metrics``) hold the rest.
"""

from vtag.hierarchy.decode import DecodedBatch, Decoder, make_consistent
from vtag.hierarchy.diff import Migration, TaxonomyDiff, diff, migration_map
from vtag.hierarchy.taxonomy import Taxonomy, TaxonomyError

__all__ = [
    "Taxonomy",
    "TaxonomyError",
    "Decoder",
    "DecodedBatch",
    "make_consistent",
    "diff",
    "migration_map",
    "Migration",
    "TaxonomyDiff",
]
