"""Uploader profiles: the category history of an uploader's earlier videos, as a model input.

The relational signal of DESIGN.md ("Context"): most of a day's videos come from uploaders seen
before, and an uploader's earlier categories predict the next one. A profile is

- ``n_videos``: how many earlier videos were counted (float: weighted counts are allowed);
- ``leaf_counts``: node id -> count, keyed by each earlier video's *primary* node (``labels[0]``,
  or a tag's ``leaf_id``; an internal node for a partial label);
- ``level1_counts``: the same per level-1 ancestor (stored for analysts; the model derives it).

:class:`ProfileTable` holds profiles by uploader (built from labeled rows, or read from the
``uploader_profiles`` Delta table / a bundle's ``uploader_profiles.parquet``, both in
:data:`vtag.models.schema.UPLOADER_PROFILES_SCHEMA`). :class:`ProfileFeaturizer` turns a profile into
the model's ``profile [B, 2 * n_nodes + 2]`` float32 input: per node the smoothed share of the
uploader's videos under that node, ``count / (n_videos + alpha)`` (counts closed over ancestors);
per node the log-ratio of the smoothed share to the node's prior ``q`` (its share of all profiled
videos), ``log((count + alpha q) / (n_videos + alpha)) - log q`` — the Naive-Bayes evidence the
uploader's history adds to a node's log-odds; then ``log1p(n_videos) / 5`` and ``n_videos > 0``.
A new uploader's vector is all zeros, so an empty profile adds nothing to the logits.

Training rows get profiles **without leakage** (:func:`leakage_free_profiles`): a row never sees
its own label. ``time`` mode counts the uploader's strictly earlier rows (by ``upload_ts``), the way
the nightly job meets data; ``kfold`` mode (no timestamps) counts the uploader's rows in the other
folds.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

#: frame columns that carry a profile per row (the tag job joins them from ``uploader_profiles``)
N_COL, LEVEL1_COL, LEAF_COL = "profile_n_videos", "profile_level1_counts", "profile_leaf_counts"
PROFILE_FILE = "uploader_profiles.parquet"
TRAIN_MODES = ("auto", "time", "kfold")


def as_count_map(value: Any) -> dict[str, float] | None:
    """A map cell as ``{node_id: count}``: a dict, a list of ``(key, value)`` pairs (Arrow maps in
    pandas) or of ``{"key", "value"}`` dicts; None / NaN -> None."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    out: dict[str, float] = {}
    for item in value:
        if isinstance(item, Mapping):
            out[str(item["key"])] = float(item["value"])
        else:
            k, v = item
            out[str(k)] = float(v)
    return out


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or v is pd.NA


def primary_labels(frame: pd.DataFrame) -> list[str | None]:
    """``labels[0]`` of each row as a string, None when absent."""
    out: list[str | None] = []
    for labels in frame["labels"]:
        if isinstance(labels, str):
            out.append(labels)
        elif labels is None or (isinstance(labels, float) and labels != labels) or len(labels) == 0:
            out.append(None)
        else:
            out.append(str(labels[0]))
    return out


class ProfileTable:
    """Profiles by uploader id for one taxonomy version.

    Parameters
    ----------
    taxonomy_version : str
        The version the node ids belong to.
    profiles : mapping
        ``uploader_id -> (n_videos, leaf_counts {node_id: count})``.
    """

    def __init__(self, taxonomy_version: str, profiles: Mapping[str, tuple[float, dict[str, float]]]):
        self.taxonomy_version = str(taxonomy_version)
        self.profiles = dict(profiles)

    def __len__(self) -> int:
        return len(self.profiles)

    def get(self, uploader_id: Any) -> tuple[float, dict[str, float]] | None:
        if _is_null(uploader_id):
            return None
        return self.profiles.get(str(uploader_id))

    @classmethod
    def from_labels(cls, frame: pd.DataFrame, taxonomy) -> ProfileTable:
        """Counts of every labeled row's primary node per uploader (rows without an uploader or a
        known primary label are skipped)."""
        counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for up, lab in zip(frame["uploader_id"], primary_labels(frame)):
            if _is_null(up) or lab is None or lab not in taxonomy.index:
                continue
            counts[str(up)][lab] += 1.0
        return cls(taxonomy.version, {u: (float(sum(c.values())), dict(c)) for u, c in counts.items()})

    # -- storage (vtag.models.schema.UPLOADER_PROFILES_SCHEMA)
    def to_arrow(self, taxonomy, updated_dt=None, source: str = "labels"):
        """The table as pyarrow in :data:`vtag.models.schema.UPLOADER_PROFILES_SCHEMA`, sorted by uploader."""
        import pyarrow as pa

        from vtag.models.schema import UPLOADER_PROFILES_SCHEMA

        ups = sorted(self.profiles)
        level1 = []
        for u in ups:
            agg: dict[str, float] = defaultdict(float)
            for node, c in self.profiles[u][1].items():
                agg[taxonomy.path(node)[0]] += c
            level1.append(sorted(agg.items()))
        return pa.table({
            "uploader_id": ups,
            "taxonomy_version": [self.taxonomy_version] * len(ups),
            "n_videos": [self.profiles[u][0] for u in ups],
            "level1_counts": level1,
            "leaf_counts": [sorted(self.profiles[u][1].items()) for u in ups],
            "updated_dt": [updated_dt] * len(ups),
            "source": [source] * len(ups),
        }, schema=UPLOADER_PROFILES_SCHEMA)

    @classmethod
    def from_arrow(cls, table, taxonomy_version: str | None = None) -> ProfileTable:
        """From a table in the profile schema; ``taxonomy_version`` given: rows of another version
        raise ValueError."""
        versions = set(table.column("taxonomy_version").to_pylist())
        if taxonomy_version is not None and versions - {taxonomy_version}:
            raise ValueError(f"uploader profiles of taxonomy version(s) {sorted(versions - {taxonomy_version})}, "
                             f"expected {taxonomy_version}")
        version = taxonomy_version or (next(iter(versions)) if versions else "")
        rows = {}
        for u, n, leaf in zip(table.column("uploader_id").to_pylist(), table.column("n_videos").to_pylist(),
                              table.column("leaf_counts").to_pylist()):
            rows[str(u)] = (float(n or 0.0), as_count_map(leaf) or {})
        return cls(version, rows)

    def save(self, path, taxonomy) -> str:
        """Write Parquet to ``path``; returns the file's sha256 (hex)."""
        import pyarrow.parquet as pq

        pq.write_table(self.to_arrow(taxonomy), str(path))
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    @classmethod
    def load(cls, path, taxonomy_version: str | None = None) -> ProfileTable:
        import pyarrow.parquet as pq

        return cls.from_arrow(pq.read_table(str(path)), taxonomy_version)


# ---------------------------------------------------------------------------------------- training
def _fold(video_id: Any, k: int) -> int:
    return zlib.crc32(str(video_id).encode("utf-8")) % k


def resolve_mode(frame: pd.DataFrame, mode: str) -> str:
    """``auto`` -> ``time`` when most rows have an ``upload_ts``, else ``kfold``."""
    if mode not in TRAIN_MODES:
        raise ValueError(f"context.profile.train_mode must be one of {TRAIN_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    if "upload_ts" not in frame.columns or len(frame) == 0:
        return "kfold"
    return "time" if float(pd.to_datetime(frame["upload_ts"], utc=True).notna().mean()) >= 0.5 else "kfold"


def leakage_free_profiles(frame: pd.DataFrame, taxonomy, mode: str = "auto", folds: int = 5
                          ) -> tuple[np.ndarray, list[dict[str, float] | None]]:
    """Per-row profiles of labeled ``frame`` in which no row sees its own label.

    Parameters
    ----------
    frame : DataFrame
        Labeled rows (``uploader_id``, ``labels``; ``upload_ts`` for ``time``, ``video_id`` for ``kfold``).
    taxonomy : Taxonomy
    mode : {"auto", "time", "kfold"}
        ``time``: the uploader's rows with a strictly earlier ``upload_ts`` (rows without a
        timestamp see all timed rows of their uploader and are counted for none).
        ``kfold``: the uploader's rows in the other ``folds`` folds (fold = hash of ``video_id``).

    Returns
    -------
    (n_videos [B] float64, leaf_counts list of dicts or None for an empty profile)
    """
    mode = resolve_mode(frame, mode)
    labels = primary_labels(frame)
    ups = [None if _is_null(u) else str(u) for u in frame["uploader_id"]]
    n = len(frame)
    out_n = np.zeros(n, dtype=np.float64)
    out_c: list[dict[str, float] | None] = [None] * n
    by_up: dict[str, list[int]] = defaultdict(list)
    for i, u in enumerate(ups):
        if u is not None:
            by_up[u].append(i)
    known = taxonomy.index
    if mode == "time":
        ts = pd.to_datetime(frame["upload_ts"], utc=True)
        t = ts.to_numpy(dtype="datetime64[ns]").astype("int64")
        timed = ts.notna().to_numpy()
        for rows in by_up.values():
            timed_rows = sorted((r for r in rows if timed[r]), key=lambda r: t[r])
            acc: dict[str, float] = defaultdict(float)
            total = 0.0
            k = 0
            while k < len(timed_rows):  # rows with the same timestamp see none of each other
                j = k
                while j < len(timed_rows) and t[timed_rows[j]] == t[timed_rows[k]]:
                    j += 1
                for r in timed_rows[k:j]:
                    if total:
                        out_n[r], out_c[r] = total, dict(acc)
                for r in timed_rows[k:j]:
                    if labels[r] in known:
                        acc[labels[r]] += 1.0
                        total += 1.0
                k = j
            for r in rows:
                if not timed[r] and total:
                    out_n[r], out_c[r] = total, dict(acc)
        return out_n, out_c
    fold = np.array([_fold(v, folds) for v in frame["video_id"]])
    for rows in by_up.values():
        per_fold: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for r in rows:
            if labels[r] in known:
                per_fold[int(fold[r])][labels[r]] += 1.0
        for r in rows:
            acc: dict[str, float] = defaultdict(float)
            for f, c in per_fold.items():
                if f != fold[r]:
                    for node, v in c.items():
                        acc[node] += v
            total = float(sum(acc.values()))
            if total:
                out_n[r], out_c[r] = total, dict(acc)
    return out_n, out_c


def with_profiles(frame: pd.DataFrame, n_videos: Sequence[float], leaf_counts: Sequence[dict | None]) -> pd.DataFrame:
    """``frame`` plus the profile columns (a copy); an empty profile is ``n = 0`` and ``{}``, not
    null, so the Predictor does not fall back to a table for it."""
    out = frame.copy()
    out[N_COL] = np.asarray(n_videos, dtype=np.float64)
    out[LEAF_COL] = pd.Series([dict(c) if c else {} for c in leaf_counts], index=out.index, dtype=object)
    return out


# ---------------------------------------------------------------------------------------- features
class ProfileFeaturizer:
    """Profiles -> ``profile [B, n_nodes + 2]`` float32 (see the module docstring).

    Parameters
    ----------
    taxonomy : Taxonomy
    alpha : float
        Smoothing: shares are ``count / (n_videos + alpha)``, so one earlier video weighs less
        than ten in agreement.
    """

    def __init__(self, taxonomy, alpha: float = 1.0):
        self.taxonomy = taxonomy
        self.alpha = float(alpha)
        self.n_nodes = n = taxonomy.n_nodes
        self.dim = 2 * n + 2
        pm = taxonomy.path_matrix  # [N, depth] node indices root..node, -1 past the node
        self._path = {nid: pm[j][pm[j] >= 0] for j, nid in enumerate(taxonomy.ids)}
        self._table: ProfileTable | None = None
        self.log_prior = np.full(n, -np.log(n), dtype=np.float32)

    @property
    def table(self) -> ProfileTable | None:
        return self._table

    @table.setter
    def table(self, table: ProfileTable | None) -> None:
        """Set the fallback profiles; the node prior ``q`` is their pooled share (add-one smoothed)."""
        self._table = table
        counts = np.ones(self.n_nodes, dtype=np.float64)
        total = float(self.n_nodes)
        for n_videos, leaf_counts in (table.profiles.values() if table is not None else ()):
            total += float(n_videos)
            for node, c in leaf_counts.items():
                path = self._path.get(node)
                if path is not None:
                    counts[path] += float(c)
        self.log_prior = np.log(np.minimum(counts / total, 1.0)).astype(np.float32)

    def vectors(self, n_videos: Iterable[float], leaf_counts: Iterable[Mapping[str, float] | None]) -> np.ndarray:
        """``[B, 2 * n_nodes + 2]`` float32 from per-row ``n_videos`` and ``{node_id: count}``; unknown
        node ids (another taxonomy version's) are ignored."""
        rows = []
        n_nodes, prior = self.n_nodes, np.exp(self.log_prior)
        for n, counts in zip(n_videos, leaf_counts):
            v = np.zeros(self.dim, dtype=np.float32)
            n = 0.0 if _is_null(n) else float(n)
            if n > 0 and counts:
                c = np.zeros(n_nodes, dtype=np.float64)
                for node, k in counts.items():
                    path = self._path.get(node)
                    if path is not None:
                        c[path] += float(k)
                v[:n_nodes] = c / (n + self.alpha)
                v[n_nodes:2 * n_nodes] = np.log((c + self.alpha * prior) / (n + self.alpha)) - self.log_prior
                v[-2] = np.log1p(n) / 5.0
                v[-1] = 1.0
            rows.append(v)
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """``[B, n_nodes + 2]`` for a frame: a row's own profile columns when present and not null,
        else the bundle table's profile of its ``uploader_id``, else empty."""
        n_col = frame[N_COL].tolist() if N_COL in frame.columns else [None] * len(frame)
        c_col = frame[LEAF_COL].tolist() if LEAF_COL in frame.columns else [None] * len(frame)
        ups = frame["uploader_id"].tolist() if "uploader_id" in frame.columns else [None] * len(frame)
        ns, cs = [], []
        for n, c, u in zip(n_col, c_col, ups):
            if not _is_null(n):
                ns.append(float(n))
                cs.append(as_count_map(c) or {})
                continue
            hit = self.table.get(u) if self.table is not None else None
            ns.append(hit[0] if hit else 0.0)
            cs.append(hit[1] if hit else None)
        return self.vectors(ns, cs)
