"""Evaluated rows grouped by what the model knew of their uploader (``vtag evaluate``'s third table).

On data that comes after the training days, most rows come from uploaders the bundle has seen, and
the model scores them far better than the rest (issue #16: on the Bilibili file split in time, 0.87
leaf accuracy against 0.33). One overall figure then says more about the share of returning
uploaders in a sample than about the model, so ``vtag evaluate`` reports each group apart:

- ``returning``: the uploader has labeled rows in the bundle's training data (it is in the bundle's
  uploader profiles, which hold every labeled training row's uploader);
- ``tag_history``: not in the training data, but an earlier day of the evaluated rows gave it a tag
  that counts towards its profile (only when the rows are replayed as the nightly job meets them,
  :mod:`vtag.models.replay`): the uploaders the nightly profile refresh teaches the model about;
- ``new``: neither — the row's uploader is unknown to the model when it is tagged;
- ``no_uploader``: the row has no ``uploader_id``.

A bundle without the uploader-profile input keeps no record of its training uploaders: no groups.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from vtag.models.profiles import _is_null

#: the groups, in report order
GROUPS = ("returning", "tag_history", "new", "no_uploader")
#: group -> one-line meaning (printed under the table; the JSON's ``uploaders.legend``)
GROUP_LEGEND = {
    "returning": "the uploader has labeled rows in the bundle's training data",
    "tag_history": "not in the training data; an earlier evaluated day gave it a counted tag (replay only)",
    "new": "the uploader is unknown to the model when the row is tagged",
    "no_uploader": "the row has no uploader_id",
}


def uploader_history_groups(frame: pd.DataFrame, training_uploaders, tag_history: np.ndarray | None = None
                            ) -> np.ndarray:
    """``[B]`` object: the group (:data:`GROUPS`) of each row of ``frame``.

    Parameters
    ----------
    frame : DataFrame
        The evaluated rows (``uploader_id`` may be missing or null).
    training_uploaders : container of str
        The uploader ids of the bundle's labeled training rows.
    tag_history : ndarray, optional
        ``[B]`` bool: the row's uploader had a counted tag on an earlier day of a replay
        (:func:`vtag.models.replay.replay`'s ``info["tag_history"]``); None: no replay.
    """
    n = len(frame)
    ups = frame["uploader_id"].tolist() if "uploader_id" in frame.columns else [None] * n
    if tag_history is not None and len(tag_history) != n:
        raise ValueError(f"tag_history has {len(tag_history)} rows, the frame {n}")
    out = np.empty(n, dtype=object)
    for i, up in enumerate(ups):
        if _is_null(up):
            out[i] = "no_uploader"
        elif str(up) in training_uploaders:
            out[i] = "returning"
        elif tag_history is not None and tag_history[i]:
            out[i] = "tag_history"
        else:
            out[i] = "new"
    return out


def evaluate_by_group(groups: np.ndarray, score: Callable[[np.ndarray], Mapping[str, Any]]) -> dict:
    """``{group: {"rows": n, "share": n / all, **score(mask)}}`` for the groups that have rows.

    Parameters
    ----------
    groups : ndarray
        ``[B]`` object, :func:`uploader_history_groups` of the scored rows.
    score : callable
        ``score(mask [B] bool) -> metrics`` of the rows in ``mask``.
    """
    total = max(1, len(groups))
    out = {}
    for g in GROUPS:
        mask = groups == g
        if mask.any():
            out[g] = {"rows": int(mask.sum()), "share": round(float(mask.sum()) / total, 4), **score(mask)}
    return out
