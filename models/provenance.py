"""What a bundle was trained and validated on, precisely enough to tell whether an evaluation set
overlaps it (#19 item 5).

For each of the training and the validation rows the bundle keeps the count and the SHA-256 of the
sorted distinct ``video_id`` values (``config.yaml``, ``bundle.train.ids``) and a Bloom filter of
those ids (``data_ids.json`` in the bundle): membership of any id is then known with a false-positive
rate of at most :data:`FALSE_POSITIVE_RATE` and never a false negative, without shipping the ids.
``vtag evaluate`` counts its rows found in either filter (:func:`overlap`). No torch import here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

IDS_FILE = "data_ids.json"
FALSE_POSITIVE_RATE = 1e-3
#: a share of evaluated rows found in the training (or validation) ids above this is an overlap
#: worth a warning (far above the filter's false-positive rate)
OVERLAP_WARN_SHARE = 0.01


def _hashes(ids: Iterable[str]) -> np.ndarray:
    """Two independent 64-bit hashes per id (blake2b), ``[n, 2]`` uint64."""
    out = [np.frombuffer(hashlib.blake2b(str(i).encode("utf-8"), digest_size=16).digest(), dtype="<u8")
           for i in ids]
    return np.array(out, dtype=np.uint64).reshape(-1, 2)


def _positions(h: np.ndarray, m: int, k: int) -> np.ndarray:
    """Bit positions ``[n, k]`` by double hashing (Kirsch–Mitzenmacher)."""
    steps = np.arange(k, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (h[:, :1] + steps[None, :] * (h[:, 1:2] | np.uint64(1))) % np.uint64(m)


def id_fingerprint(ids: Iterable[str], fpr: float = FALSE_POSITIVE_RATE) -> dict[str, Any]:
    """Count, SHA-256 and Bloom filter of the distinct ``ids``.

    Parameters
    ----------
    ids
        Video ids (nulls are skipped).
    fpr
        The filter's false-positive rate at this many ids.

    Returns
    -------
    dict
        ``count``, ``sha256`` (of the sorted ids joined by newlines) and ``bloom``
        (``m`` bits, ``k`` hashes, ``bits``: zlib + base64 of the bit array).
    """
    distinct = sorted({str(i) for i in ids if i is not None})
    n = len(distinct)
    m = max(64, int(math.ceil(-max(n, 1) * math.log(fpr) / math.log(2) ** 2)))
    k = max(1, int(round(m / max(n, 1) * math.log(2))))
    bits = np.zeros(m, dtype=bool)
    if n:
        bits[_positions(_hashes(distinct), m, k).ravel().astype(np.int64)] = True
    packed = zlib.compress(np.packbits(bits).tobytes(), 9)
    return {
        "count": n,
        "sha256": hashlib.sha256("\n".join(distinct).encode("utf-8")).hexdigest(),
        "bloom": {"m": m, "k": k, "bits": base64.b64encode(packed).decode("ascii")},
    }


def contains(fingerprint: Mapping[str, Any], ids: Iterable[str]) -> np.ndarray:
    """Whether each of ``ids`` is (probably) among the fingerprinted ids: ``[n]`` bool.

    Parameters
    ----------
    fingerprint
        What :func:`id_fingerprint` returned.
    ids
        Ids to look up.
    """
    ids = [str(i) for i in ids]
    bloom = fingerprint["bloom"]
    m, k = int(bloom["m"]), int(bloom["k"])
    bits = np.unpackbits(np.frombuffer(zlib.decompress(base64.b64decode(bloom["bits"])), dtype=np.uint8))[:m]
    if not ids:
        return np.zeros(0, dtype=bool)
    return bits[_positions(_hashes(ids), m, k).astype(np.int64)].all(axis=1)


def data_ids(train_frame, val_frame) -> dict[str, Any]:
    """Fingerprints of the training and validation rows' ``video_id`` (``train_info["ids"]``).

    Parameters
    ----------
    train_frame, val_frame
        The rows the model was fitted on and the rows it was validated (early-stopped) on.
    """
    def ids(frame) -> list:
        return [] if frame is None or "video_id" not in frame else list(frame["video_id"])

    return {"train": id_fingerprint(ids(train_frame)), "validation": id_fingerprint(ids(val_frame))}


def split_ids_record(train_info: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``train_info`` with its ids' Bloom filters moved out: ``(info for config.yaml, file content)``.

    Parameters
    ----------
    train_info
        The bundle's training record (its ``ids`` entry from :func:`data_ids`, if any).
    """
    info = dict(train_info)
    ids = info.pop("ids", None)
    if not ids:
        return info, None
    info["ids"] = {part: {"count": fp["count"], "sha256": fp["sha256"]} for part, fp in ids.items()}
    info["ids"]["file"] = IDS_FILE
    return info, {"false_positive_rate": FALSE_POSITIVE_RATE, **ids}


def read_ids(bundle_dir: str | Path) -> dict[str, Any] | None:
    """The bundle's id fingerprints (``data_ids.json``), or None for a bundle without them.

    Parameters
    ----------
    bundle_dir
        The bundle directory.
    """
    path = Path(bundle_dir) / IDS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def overlap(bundle_dir: str | Path, ids: Iterable[str]) -> dict[str, Any]:
    """How many of ``ids`` the bundle was trained or validated on.

    Parameters
    ----------
    bundle_dir
        The bundle directory.
    ids
        The evaluated rows' video ids.

    Returns
    -------
    dict
        ``known`` (whether the bundle records its ids), ``rows``, per part (``train``,
        ``validation``) the rows found and their share, ``seen`` (rows found in either); ``warning`` (a sentence, or None) when a share
        exceeds :data:`OVERLAP_WARN_SHARE`.
    """
    ids = [str(i) for i in ids]
    record = read_ids(bundle_dir)
    out: dict[str, Any] = {"known": record is not None, "rows": len(ids), "warning": None}
    if record is None:
        out["warning"] = ("the bundle does not record its training ids (trained before vtag recorded them): "
                          "overlap with the training data cannot be checked")
        return out
    found = []
    seen = np.zeros(len(ids), dtype=bool)
    for part in ("train", "validation"):
        if part not in record:
            continue
        hits = contains(record[part], ids)
        seen |= hits
        hit = int(hits.sum())
        share = hit / len(ids) if ids else 0.0
        out[part] = {"rows": hit, "share": round(share, 4)}
        if share > OVERLAP_WARN_SHARE:
            found.append(f"{hit} of {len(ids)} rows ({share:.0%}) are {'training' if part == 'train' else 'validation'} rows")
    out["seen"] = int(seen.sum())
    out["false_positive_rate"] = record.get("false_positive_rate")
    if found:
        out["warning"] = ("EVALUATED ON THE MODEL'S OWN DATA: " + "; ".join(found)
                          + ". These metrics overstate what the model does on new videos; evaluate on held-out "
                          "days or uploaders.")
    return out


def describe_split(train_frame, val_frame) -> dict[str, Any]:
    """What the validation rows are, measured against the training rows (the model card says it).

    Parameters
    ----------
    train_frame, val_frame : DataFrame
        The two sides of a training run (``uploader_id`` and ``upload_ts`` may be missing or null).

    Returns
    -------
    dict
        ``kind``: ``"later"`` (every validation row with an upload time is at or after the latest
        training one: ``train.val_split: time``), ``"held_out_uploaders"`` (no uploader on both sides:
        ``grouped``) or ``"other"`` (e.g. ``--val-data``); ``rows``; ``returning``: the share of the
        validation rows whose uploader has training rows; ``first`` / ``last``: the validation rows'
        earliest and latest upload day (None without times).
    """
    import pandas as pd

    def column(frame, name):
        return frame[name] if name in frame.columns else pd.Series([None] * len(frame), dtype=object)

    rows = len(val_frame)
    train_ups = {str(u) for u in column(train_frame, "uploader_id").dropna()}
    val_ups = column(val_frame, "uploader_id")
    returning = float(val_ups.dropna().astype(str).isin(train_ups).sum()) / rows if rows else 0.0
    t_train = pd.to_datetime(column(train_frame, "upload_ts"), utc=True).dropna()
    t_val = pd.to_datetime(column(val_frame, "upload_ts"), utc=True).dropna()
    if rows and len(t_val) and len(t_train) and t_val.min() >= t_train.max():
        kind = "later"
    elif rows and returning == 0.0 and val_ups.notna().any():
        kind = "held_out_uploaders"
    else:
        kind = "other"
    return {"kind": kind, "rows": int(rows), "returning": round(returning, 4),
            "first": t_val.min().strftime("%Y-%m-%d") if len(t_val) else None,
            "last": t_val.max().strftime("%Y-%m-%d") if len(t_val) else None}
