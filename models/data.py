"""Reading labeled dumps for training and evaluation, without Spark.

A dump root holds ``dt=YYYY-MM-DD/`` folders of Parquet or JSON Lines files (DESIGN.md, "Input");
labeled dumps add ``labels: list<string>`` (``labels[0]`` = primary leaf). :func:`read_dumps` reads
one root or several (a comma-separated string or a list) through ``pyarrow.dataset`` into one
pandas frame, with the partition value as a ``dt`` string column. Covers given only by
``cover_uri`` are resolved to bytes from the local file system (an unreadable one stays null: a
missing modality, as in the Spark job).

:func:`grouped_split` is the train/validation split used by training: grouped by uploader, so an
uploader's videos never sit on both sides (null uploaders are grouped per video).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from vtag.models.dates import dates_filter, parse_dates
from vtag.models.schema import DUMP_SCHEMA, LABELED_SCHEMA, REQUIRED_DUMP_COLUMNS

log = logging.getLogger(__name__)

_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz")


class DumpError(ValueError):
    """A dump root is missing, empty, or lacks required columns."""


def split_roots(roots: str | Path | Sequence[str | Path]) -> list[Path]:
    """``"a,b"`` / ``Path`` / list -> list of paths (empty items dropped)."""
    if isinstance(roots, (str, Path)):
        items = [r.strip() for r in str(roots).split(",")]
    else:
        items = [str(r).strip() for r in roots]
    out = [Path(r.removeprefix("file:")) for r in items if r]
    if not out:
        raise DumpError("no dump root given")
    return out


def _data_files(root: Path) -> tuple[list[str], list[str]]:
    """(parquet files, json files) under ``root``, skipping ``_``/``.``-prefixed names."""
    pq, js = [], []
    for f in sorted(root.rglob("*")):
        if not f.is_file() or any(part.startswith(("_", ".")) for part in f.relative_to(root).parts):
            continue
        name = f.name.lower()
        if name.endswith(_PARQUET_SUFFIXES):
            pq.append(str(f))
        elif name.endswith(_JSON_SUFFIXES):
            js.append(str(f))
    return pq, js


def _read_root(root: Path, filt=None) -> pa.Table:
    """The rows of one dump root; ``filt``: a ``dt`` partition filter (:func:`dates_filter`)."""
    if not root.exists():
        raise DumpError(f"dump root {root} does not exist")
    pq_files, js_files = _data_files(root)
    if not pq_files and not js_files:
        raise DumpError(f"dump root {root} holds no Parquet or JSON Lines files")
    if filt is not None and not any(p.is_dir() for p in root.glob("dt=*")):
        raise DumpError(f"dump root {root} has no dt=YYYY-MM-DD partitions to select days from")
    part = ds.partitioning(pa.schema([pa.field("dt", pa.string())]), flavor="hive")
    tables = []
    for files, fmt in ((pq_files, "parquet"), (js_files, "json")):
        if not files:
            continue
        dset = ds.dataset(files, format=fmt, partitioning=part, partition_base_dir=str(root))
        tables.append(_normalize(dset.to_table(filter=filt), root))
    return pa.concat_tables(tables, promote_options="permissive")


def _normalize(table: pa.Table, root: Path) -> pa.Table:
    """Cast known columns to the dump schema's types (JSON gives strings for binary/timestamps)."""
    cols = {}
    for name in table.column_names:
        col = table.column(name)
        if name in LABELED_SCHEMA.names:
            target = LABELED_SCHEMA.field(name).type
            if name == "cover" and pa.types.is_string(col.type):
                col = pa.array([None if v is None else base64.b64decode(v) for v in col.to_pylist()], pa.binary())
            elif col.type != target:
                if pa.types.is_null(col.type):
                    col = pa.nulls(len(col), target)
                else:
                    col = col.cast(target)
        cols[name] = col
    for name in ("cover", "cover_uri", "description", "source_program", "duration_s"):
        if name not in cols:
            cols[name] = pa.nulls(table.num_rows, DUMP_SCHEMA.field(name).type)
    if "dt" not in cols:
        cols["dt"] = pa.nulls(table.num_rows, pa.string())
    return pa.table(cols)


def resolve_cover_uris(frame: pd.DataFrame, base: Path | None = None) -> pd.DataFrame:
    """Fill ``cover`` from local ``cover_uri`` files where ``cover`` is null (in place; returned).

    Relative URIs resolve against ``base``. Unreadable files leave ``cover`` null.
    """
    if "cover_uri" not in frame.columns:
        return frame
    need = frame["cover"].isna() & frame["cover_uri"].notna()
    if not need.any():
        return frame
    covers = frame["cover"].astype(object).copy()
    for i in np.flatnonzero(need.to_numpy()):
        uri = str(frame["cover_uri"].iat[i]).removeprefix("file://").removeprefix("file:")
        p = Path(uri)
        if not p.is_absolute() and base is not None:
            p = base / p
        try:
            covers.iat[i] = p.read_bytes()
        except OSError:
            covers.iat[i] = None
    frame["cover"] = covers
    return frame


def read_dumps(
    roots: str | Path | Sequence[str | Path],
    *,
    dates: Iterable[str] | None = None,
    labeled: bool = True,
    limit: int | None = None,
) -> pd.DataFrame:
    """Read one or several dump roots into one pandas frame (rows in file order).

    Columns: the ``DUMP_SCHEMA`` columns, ``labels`` (lists of node ids, when ``labeled``) and
    ``dt`` (the partition, a string). ``cover`` holds ``bytes`` or None. ``dates``: only the ``dt``
    partitions these days and ranges select (:func:`parse_dates`; a ``--dates`` string is taken).
    Raises :class:`DumpError` on a missing root, no files, missing required columns, or ``dates``
    that select no row (or a root without ``dt=`` partitions); ValueError on a malformed ``dates``.
    """
    dates = parse_dates(dates)
    filt = None if dates is None else dates_filter(dates)
    paths = split_roots(roots)
    tables = []
    for root in paths:
        t = _read_root(root, filt)
        missing = [c for c in REQUIRED_DUMP_COLUMNS if c not in t.column_names]
        if labeled and "labels" not in t.column_names:
            missing.append("labels")
        if missing:
            raise DumpError(f"dump root {root} lacks required columns {missing}")
        tables.append((root, t))
    frames = []
    for root, t in tables:
        f = t.to_pandas(types_mapper=None)
        f = resolve_cover_uris(f, base=root)
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if dates is not None and frame.empty:
        raise DumpError(f"no rows in the dt partitions of {','.join(map(str, paths))} selected by --dates "
                        f"{','.join(dates)}; days there: {_days_held(paths)}")
    if labeled:
        frame["labels"] = [_as_list(v) for v in frame["labels"]]
    if limit is not None:
        frame = frame.iloc[: int(limit)].reset_index(drop=True)
    log.info("read %d rows from %s", len(frame), ",".join(map(str, paths)))
    return frame


def dump_days(paths: Sequence[Path]) -> list[str]:
    """The ``dt`` partitions (``YYYY-MM-DD``) under the dump roots ``paths``, sorted, each once.

    Parameters
    ----------
    paths
        Dump roots holding ``dt=*/`` folders.
    """
    return sorted({p.name[3:] for root in paths for p in Path(root).glob("dt=*") if p.is_dir()})


def _days_held(paths: Sequence[Path]) -> str:
    days = dump_days(paths)
    return f"{days[0]} .. {days[-1]} ({len(days)} partitions)" if days else "none"


def _as_list(v) -> list[str]:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return []
    return [str(x) for x in list(v)]


# ---------------------------------------------------------------------- labels
def label_summary(frame: pd.DataFrame, taxonomy, top: int = 10) -> dict:
    """How the ``labels`` column meets ``taxonomy``: what :func:`check_labels` drops, for reports.

    Parameters
    ----------
    frame : DataFrame
        Rows with a ``labels`` column (``labels[0]`` is the primary label).
    taxonomy : Taxonomy
    top : int
        How many of the unknown primary labels to name.

    Returns
    -------
    dict
        ``rows_without_label`` (null or empty ``labels``), ``rows_unknown_label`` (a primary label
        that is no node of the taxonomy), ``unknown_labels`` (the ``top`` most frequent of those,
        ``{label: rows}``, most frequent first) and ``unknown_extra_tags`` (other listed labels that
        are no node).
    """
    import collections

    known = taxonomy.by_id
    empty, extra = 0, 0
    unknown: collections.Counter = collections.Counter()
    for labels in frame["labels"]:
        labels = _as_list(labels)
        if not labels:
            empty += 1
            continue
        if labels[0] not in known:
            unknown[labels[0]] += 1
        extra += sum(1 for x in labels[1:] if x not in known)
    return {"rows_without_label": empty, "rows_unknown_label": int(sum(unknown.values())),
            "unknown_labels": dict(unknown.most_common(top)), "unknown_extra_tags": extra}


def latest_per_video(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per ``video_id``: the row of the latest ``dt`` (ties, or no ``dt``: the last in frame
    order), so that a video delivered on two days (a re-sent dump, a relabel) trains once, with its
    latest label, and never sits on both sides of a validation split. Rows without a ``video_id``
    are kept as they are.

    Parameters
    ----------
    frame : DataFrame
        Labeled rows with ``video_id`` (and usually ``dt``).

    Returns
    -------
    (DataFrame, int)
        The rows kept (frame order, index reset) and how many were dropped.
    """
    if "video_id" not in frame.columns or len(frame) == 0:
        return frame.reset_index(drop=True), 0
    ids = frame["video_id"]
    has_id = ids.notna().to_numpy()
    day = frame["dt"].astype("string").fillna("") if "dt" in frame.columns else pd.Series("", index=frame.index)
    order = pd.DataFrame({"id": ids.to_numpy(), "day": day.to_numpy(), "pos": np.arange(len(frame))})[has_id]
    last = order.sort_values(["day", "pos"], kind="stable").drop_duplicates("id", keep="last")["pos"].to_numpy()
    keep = ~has_id
    keep[last] = True
    return frame.loc[keep].reset_index(drop=True), int((~keep).sum())


def check_labels(frame: pd.DataFrame, taxonomy) -> pd.DataFrame:
    """Keep rows whose primary label (``labels[0]``) is a taxonomy node; drop unknown extra tags.

    Returns a new frame (index reset). Logs how many rows/tags were dropped, and the most frequent
    unknown primary labels (:func:`label_summary`).
    """
    known = taxonomy.by_id
    keep = np.array([bool(x) and x[0] in known for x in map(_as_list, frame["labels"])], dtype=bool)
    out = frame.loc[keep].copy()
    out["labels"] = [[x for x in _as_list(v) if x in known] for v in out["labels"]]
    summary = label_summary(frame, taxonomy)
    if summary["rows_without_label"] or summary["rows_unknown_label"] or summary["unknown_extra_tags"]:
        log.warning(
            "labels: dropped %d rows without a label, %d rows whose primary label is not in taxonomy %s "
            "(most frequent: %s) and %d unknown extra tags",
            summary["rows_without_label"], summary["rows_unknown_label"],
            getattr(taxonomy, "label", "") or getattr(taxonomy, "version", ""),
            ", ".join(f"{k!r} {v}" for k, v in summary["unknown_labels"].items()) or "-",
            summary["unknown_extra_tags"],
        )
    return out.reset_index(drop=True)


def primary_leaf_index(frame: pd.DataFrame, taxonomy) -> np.ndarray:
    """``[B]`` int64: node index of each row's ``labels[0]`` (-1 when absent/unknown)."""
    idx = taxonomy.index
    return np.array([idx.get(_as_list(v)[0], -1) if len(_as_list(v)) else -1 for v in frame["labels"]], np.int64)


# ---------------------------------------------------------------------- split
def group_keys(frame: pd.DataFrame) -> np.ndarray:
    """``[B]`` object: ``uploader_id``, or ``"video:<video_id>"`` where the uploader is null."""
    ups = frame["uploader_id"].tolist()
    vids = frame["video_id"].tolist()
    out = [f"video:{v}" if (u is None or u != u) else f"uploader:{u}" for u, v in zip(ups, vids)]
    return np.asarray(out, dtype=object)


def grouped_split(frame: pd.DataFrame, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into (train, validation) positional indices, grouped by uploader.

    Groups are ordered by a seeded hash of their key (stable when data is appended) and moved to
    validation in that order until it holds ``val_fraction`` of the rows. With two or more groups,
    both sides get at least one group. Indices are sorted int64 arrays.
    """
    keys = group_keys(frame)
    n = len(keys)
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    order = sorted(range(len(uniq)), key=lambda g: hashlib.sha1(f"{seed}:{uniq[g]}".encode()).hexdigest())
    target = val_fraction * n
    in_val = np.zeros(len(uniq), dtype=bool)
    taken = 0
    for g in order:
        if taken >= target and in_val.any():
            break
        if len(uniq) >= 2 and in_val.sum() == len(uniq) - 1:
            break
        in_val[g] = True
        taken += counts[g]
    if val_fraction <= 0:
        in_val[:] = False
    val_mask = in_val[inverse]
    return np.flatnonzero(~val_mask).astype(np.int64), np.flatnonzero(val_mask).astype(np.int64)


def temporal_split(frame: pd.DataFrame, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into (train, validation) positional indices by time: the latest ``val_fraction``
    of the rows by ``upload_ts`` are validation (ties at the cut go to validation; rows without a
    timestamp stay on the training side). This is how the nightly job meets data: a model trained
    on earlier days tags later ones, most of them from uploaders it has seen."""
    n = len(frame)
    if val_fraction <= 0 or n == 0:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ts = pd.to_datetime(frame["upload_ts"], utc=True)
    t = ts.to_numpy(dtype="datetime64[ns]").astype("int64")
    timed = np.flatnonzero(ts.notna().to_numpy())
    k = max(1, int(round(val_fraction * n)))
    if len(timed) <= k:
        return grouped_split(frame, val_fraction)
    cut = np.sort(t[timed])[len(timed) - k]
    val = np.zeros(n, dtype=bool)
    val[timed] = t[timed] >= cut
    if val.all():
        return grouped_split(frame, val_fraction)
    return np.flatnonzero(~val).astype(np.int64), np.flatnonzero(val).astype(np.int64)


VAL_SPLITS = ("auto", "time", "grouped")


def validation_split(frame: pd.DataFrame, val_fraction: float, seed: int, how: str = "auto"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The training run's validation split: ``time`` (:func:`temporal_split`), ``grouped``
    (:func:`grouped_split`, by uploader) or ``auto`` (time when at least half the rows have an
    ``upload_ts``, else grouped)."""
    if how not in VAL_SPLITS:
        raise ValueError(f"train.val_split must be one of {VAL_SPLITS}, got {how!r}")
    if how == "auto":
        timed = "upload_ts" in frame.columns and len(frame) and \
            float(pd.to_datetime(frame["upload_ts"], utc=True).notna().mean()) >= 0.5
        how = "time" if timed else "grouped"
    if how == "time":
        return temporal_split(frame, val_fraction)
    return grouped_split(frame, val_fraction, seed)


# ---------------------------------------------------------------------- toy data
def toy_labeled_frame(taxonomy, n: int = 48, seed: int = 0, n_uploaders: int | None = None, cover_px: int = 24) -> pd.DataFrame:
    """A small *learnable* labeled frame in ``LABELED_SCHEMA`` columns, for tests and smoke runs.

    The title names the primary leaf and its parent, the cover's colour encodes the level-1
    category, and uploaders specialise in a leaf — so every modality carries signal. Extra tags
    follow the taxonomy's ``requires``. The real data comes from ``vtag generate``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    leaves = list(taxonomy.leaf_ids)
    tops = [nd.id for nd in taxonomy.nodes if nd.parent is None]
    n_up = n_uploaders or max(2, n // 4)
    noise = ["今天", "分享", "一下", "超级", "好看", "推荐", "视频", "合集", "精彩", "日常"]
    rows = []
    for i in range(n):
        up = int(rng.integers(n_up))
        leaf = leaves[(up + int(rng.integers(2)) * (i % 3 == 0)) % len(leaves)]
        path = taxonomy.path(leaf)
        names = taxonomy.path_names(leaf)
        words = [names[-1], names[-2] if len(names) > 1 else names[0]] + list(rng.choice(noise, 3))
        rng.shuffle(words)
        top = tops.index(path[0])
        hue = (top * 255 // max(1, len(tops)), 200 - 40 * top % 200, 60 + 50 * top % 190)
        arr = np.clip(np.array(hue)[None, None, :] + rng.normal(0, 12, (cover_px, cover_px, 3)), 0, 255)
        buf = io.BytesIO()
        Image.fromarray(arr.astype(np.uint8)).save(buf, format="JPEG", quality=80)
        labels = [leaf] + [r for r in taxonomy.constraints.requires.get(leaf, ())]
        rows.append(
            {
                "video_id": f"v{seed}_{i:05d}",
                "title": "".join(words),
                "description": None if i % 4 == 0 else f"{names[0]} {names[-1]} 相关内容",
                "cover": buf.getvalue(),
                "cover_uri": None,
                "uploader_id": None if i % 11 == 5 else f"u{up:03d}",
                "source_program": None if i % 5 == 0 else f"prog_{path[0]}",
                "duration_s": int(rng.integers(5, 600)),
                "upload_ts": pd.Timestamp("2024-05-01", tz="UTC") + pd.Timedelta(seconds=int(rng.integers(86400))),
                "labels": labels,
            }
        )
    frame = pd.DataFrame(rows, columns=LABELED_SCHEMA.names)
    frame["duration_s"] = frame["duration_s"].astype("Int32")
    return frame


def write_dump(frame: pd.DataFrame, root: str | Path, dt: str, *, fmt: str = "parquet") -> Path:
    """Write ``frame`` as one day ``<root>/dt=<dt>/part-0.<fmt>`` plus ``_SUCCESS`` (tests, benches)."""
    day = Path(root) / f"dt={dt}"
    day.mkdir(parents=True, exist_ok=True)
    cols = [c for c in LABELED_SCHEMA.names if c in frame.columns]
    schema = pa.schema([LABELED_SCHEMA.field(c) for c in cols])
    table = pa.Table.from_pandas(frame[cols], schema=schema, preserve_index=False)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, day / "part-0.parquet")
    elif fmt == "jsonl":
        import json

        with open(day / "part-0.jsonl", "w", encoding="utf-8") as fh:
            for rec in table.to_pylist():
                if rec.get("cover") is not None:
                    rec["cover"] = base64.b64encode(rec["cover"]).decode("ascii")
                if rec.get("upload_ts") is not None:
                    rec["upload_ts"] = rec["upload_ts"].isoformat()
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    else:
        raise ValueError(f"unknown format {fmt!r}")
    (day / "_SUCCESS").touch()
    return day
