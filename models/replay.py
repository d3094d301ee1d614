"""Score labeled rows day by day, the way the nightly job meets them (``vtag evaluate --replay``).

The nightly job tags day D with the uploader profiles of the days before D, and after the day is
published ``vtag profiles refresh`` adds that day's tags to the profiles
(:mod:`vtag.jobs.pipeline.profiles`: ``video_tags`` rows with ``score >= profiles.min_score``, each
counted by its score, or as one video with ``profiles.count: one``). So an uploader the bundle never
saw has an empty profile on the first day it uploads and, from the next day on, the categories the
model gave its earlier videos. A plain evaluation scores every row with
the bundle's training-time profiles alone, which understates the product on new uploaders.

:func:`replay_scores` reproduces the nightly loop on a labeled frame, without Spark and without
reading any label of the evaluated rows:

1. the rows are grouped by day: the ``dt`` partition where the frame has one (a dump), else the
   UTC date of ``upload_ts``; rows with neither come last, after every dated day;
2. the history starts as the bundle's own profiles (its training labels: the ``labels`` source of
   the nightly table);
3. each day's rows are scored with the history's profile of their uploader (the rows' own profile
   columns are replaced), then every row of that day whose primary score is ``>= min_score`` adds
   to its uploader's history at its predicted primary node: its score with ``count="score"`` (an
   expected count: a calibrated score is the chance the tag is right, so an unsure tag weighs
   little instead of counting as a whole video or not at all), 1 with ``count="one"``. ``n_videos``
   grows by the same amount. A video counts once.

Nothing of a day reaches the rows of the same day, as in production. The result is in the frame's
row order, so it is scored like :meth:`vtag.models.predictor.Predictor.predict_scores`'s.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import numpy as np
import pandas as pd

from vtag.models.profiles import _is_null, with_profiles

#: key of the rows without a day (they are scored after every dated day)
UNDATED = "~undated"
#: how a tag counts towards its uploader's profile: by its score (an expected count) or as 1
COUNT_MODES = ("score", "one")


def check_count_settings(min_score: float, count: str) -> None:
    """Raise ValueError unless ``min_score`` is within [0, 1] and ``count`` one of :data:`COUNT_MODES`.

    Parameters
    ----------
    min_score : float
        The score floor of a counted tag.
    count : str
        The counting mode.
    """
    if not 0.0 <= float(min_score) <= 1.0:
        raise ValueError(f"min_score must be within [0, 1], got {min_score}")
    if count not in COUNT_MODES:
        raise ValueError(f"count must be one of {COUNT_MODES}, got {count!r}")


def replay_days(frame: pd.DataFrame) -> np.ndarray:
    """``[B]`` object day keys (``YYYY-MM-DD``, or :data:`UNDATED`): ``dt`` when the frame has it,
    else the UTC date of ``upload_ts``.

    Parameters
    ----------
    frame : DataFrame
        Labeled or unlabeled dump rows.
    """
    if "dt" in frame.columns and frame["dt"].notna().any():
        days = [UNDATED if _is_null(d) else str(d)[:10] for d in frame["dt"]]
    elif "upload_ts" in frame.columns:
        ts = pd.to_datetime(frame["upload_ts"], utc=True, errors="coerce")
        days = [UNDATED if pd.isna(t) else t.strftime("%Y-%m-%d") for t in ts]
    else:
        days = [UNDATED] * len(frame)
    return np.array(days, dtype=object)


def replay_scores(predictor, frame: pd.DataFrame, min_score: float = 0.0, count: str = "score",
                  on_day: Callable[[str, int], None] | None = None):
    """``(DecodedBatch, cover_present [B] bool, info)`` of ``frame`` scored day by day.

    Parameters
    ----------
    predictor : Predictor
        A loaded bundle with the uploader-profile input (``context.profile.enabled``).
    frame : DataFrame
        Dump rows (labels are not read).
    min_score : float
        A scored row counts towards its uploader's profile from the next day on when its primary
        score is at least this (the job conf's ``profiles.min_score``).
    count : {"score", "one"}
        What a counted row adds: its score or 1 (the job conf's ``profiles.count``).
    on_day : callable, optional
        ``on_day(day, rows)`` after each day is scored (progress).

    Returns
    -------
    decoded : DecodedBatch
        In ``frame``'s row order.
    cover_present : ndarray
        ``[B]`` bool.
    info : dict
        See :func:`replay`.

    Raises
    ------
    ValueError
        The bundle has no uploader-profile input, ``min_score`` is outside [0, 1] or ``count`` unknown.
    """
    if getattr(predictor.featurizer, "profile", None) is None:
        raise ValueError("--replay needs a bundle trained with the uploader-profile input "
                         "(context.profile.enabled); this bundle has none")
    probs, covers, info = replay(frame, predictor.featurizer.profiles, predictor.predict_proba, predictor.decoder,
                                 predictor.taxonomy, min_score, on_day, count=count)
    return predictor.decoder.decode(probs), covers, info


def replay(frame: pd.DataFrame, table, score_day: Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]],
           decoder, taxonomy, min_score: float = 0.0, on_day: Callable[[str, int], None] | None = None,
           count: str = "score"):
    """The nightly loop over ``frame``'s days (see the module docstring).

    Parameters
    ----------
    frame : DataFrame
        Rows to score (labels are not read).
    table : ProfileTable or None
        The profiles before the first day (a bundle's: its training labels).
    score_day : callable
        ``score_day(rows with profile columns) -> (prob [b, n_nodes] float32, cover_present [b] bool)``.
    decoder
        Turns ``prob`` into a :class:`vtag.hierarchy.decode.DecodedBatch` (primary node and score).
    taxonomy : Taxonomy
    min_score : float
        A row's predicted primary node counts from the next day on when its score is ``>= min_score``.
    on_day : callable, optional
        ``on_day(day, rows)`` after each day.
    count : {"score", "one"}
        A counted row adds its score (default) or 1 to its node and to ``n_videos``.

    Returns
    -------
    prob : ndarray
        ``[B, n_nodes]`` float32 in ``frame``'s row order.
    cover_present : ndarray
        ``[B]`` bool.
    info : dict
        ``days`` (days replayed), ``rows_with_tag_history`` (rows whose profile held at least one
        earlier predicted tag), ``tags_counted`` (predicted tags added), ``videos_counted`` (their
        total weight), ``min_score``, ``count``, and ``tag_history``: ``[B]`` bool, those rows
        (not JSON: :func:`vtag.models.evaluate.evaluate_frame` takes it out of its report).
    """
    check_count_settings(min_score, count)
    history: dict[str, list] = {}
    if table is not None:
        history = {u: [float(n), dict(c)] for u, (n, c) in table.profiles.items()}
    tagged: dict[str, set] = defaultdict(set)  # uploader -> videos counted from predicted tags
    days = replay_days(frame)
    n = len(frame)
    probs = np.zeros((n, taxonomy.n_nodes), dtype=np.float32)
    covers = np.zeros(n, dtype=bool)
    uploaders = [None if _is_null(u) else str(u) for u in
                 (frame["uploader_id"] if "uploader_id" in frame.columns else [None] * n)]
    video_ids = frame["video_id"].astype(str).tolist() if "video_id" in frame.columns else [str(i) for i in range(n)]
    tag_history = np.zeros(n, dtype=bool)
    counted = 0
    weight_total = 0.0
    for day in sorted(set(days.tolist())):  # UNDATED sorts after every YYYY-MM-DD
        rows = np.flatnonzero(days == day)
        prof = [history.get(uploaders[i]) if uploaders[i] is not None else None for i in rows]
        tag_history[rows] = [uploaders[i] is not None and bool(tagged.get(uploaders[i])) for i in rows]
        part = with_profiles(frame.iloc[rows], [p[0] if p else 0.0 for p in prof],
                             [p[1] if p else {} for p in prof])
        probs[rows], covers[rows] = score_day(part)
        decoded = decoder.decode(probs[rows])
        for k, i in enumerate(rows):
            up, score = uploaders[i], float(decoded.leaf_score[k])
            if up is None or score < min_score or video_ids[i] in tagged[up]:
                continue
            tagged[up].add(video_ids[i])
            entry = history.setdefault(up, [0.0, {}])
            node = taxonomy.ids[int(decoded.leaf[k])]
            weight = score if count == "score" else 1.0
            entry[0] += weight
            entry[1][node] = entry[1].get(node, 0.0) + weight
            counted += 1
            weight_total += weight
        if on_day is not None:
            on_day(day, len(rows))
    info = {"days": int(len(set(days.tolist()))), "rows_with_tag_history": int(tag_history.sum()),
            "tags_counted": int(counted), "videos_counted": round(weight_total, 4), "min_score": float(min_score),
            "count": count, "tag_history": tag_history}
    return probs, covers, info
