"""The taxonomy's value types: :class:`Node`, :class:`Constraints` and :class:`TaxonomyError`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class TaxonomyError(ValueError):
    """A taxonomy file is invalid. The message names the file, the node and the reason."""

    def __init__(self, source: str, node: str | None, reason: str):
        self.source = source
        self.node = node
        self.reason = reason
        where = f"{source}: node {node!r}: " if node is not None else f"{source}: "
        super().__init__(where + reason)


@dataclass(frozen=True)
class Node:
    """One taxonomy node. ``level`` is 1 for top categories; ``parent`` is None for them."""

    id: str
    name: str
    parent: str | None
    level: int
    children: tuple[str, ...] = ()
    name_en: str | None = None
    source: str | None = None
    replaces: tuple[str, ...] = ()

    @property
    def is_leaf(self) -> bool:
        return not self.children


@dataclass(frozen=True)
class Constraints:
    """Label constraints beyond the ancestor rule.

    ``exclusive``: groups (sorted tuples of ids) of which at most one may be tagged on one video.
    ``requires``: id -> ids that tagging it implies.
    ``cooccur``: (a, b, strength) priors, a < b, strength in (0, 1].
    """

    exclusive: tuple[tuple[str, ...], ...] = ()
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cooccur: tuple[tuple[str, str, float], ...] = ()
    exclusive_names: tuple[str | None, ...] = ()
