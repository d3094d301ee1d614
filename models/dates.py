"""Selecting the days of a dump: the ``--dates`` option of ``vtag train`` and ``vtag evaluate``.

Items are days ``YYYY-MM-DD`` and inclusive ranges ``A..B``, ``..B`` or ``A..``, comma-separated;
:func:`dates_filter` turns them into a pyarrow filter on the hive ``dt`` partition (string
comparison is date order for ``YYYY-MM-DD``). Training on the earlier days and evaluating on the
later ones is how the nightly job meets data.
"""

from __future__ import annotations

import re
from typing import Iterable

import pandas as pd
import pyarrow.compute as pc

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_dates(spec: str | Iterable[str] | None) -> list[str] | None:
    """A ``--dates`` value -> its items, checked: days ``YYYY-MM-DD`` and inclusive ranges
    ``A..B``, ``..B`` (up to B) or ``A..`` (from A on), comma-separated. None stays None.

    Parameters
    ----------
    spec : str or iterable of str or None
        ``"2023-08-19..2023-10-12"``, ``"..2023-10-12,2023-10-20"`` or a list of such items.

    Raises
    ------
    ValueError
        An item that is not a day or a range of days, a range whose start is after its end, or no
        item at all.
    """
    if spec is None:
        return None
    raw = spec.split(",") if isinstance(spec, str) else [str(x) for x in spec]
    items = [x.strip() for x in raw if x.strip()]
    if not items:
        raise ValueError(f"--dates {spec!r}: no day given")
    for item in items:
        lo, sep, hi = item.partition("..")
        ends = [e for e in (lo, hi) if e] if sep else [item]
        if not ends or not all(_DAY.fullmatch(e) for e in ends):
            raise ValueError(f"--dates item {item!r} is not a day (YYYY-MM-DD) or a range (A..B, ..B, A..)")
        for e in ends:
            pd.Timestamp(e)  # a real calendar day (raises on 2023-02-30)
        if lo and hi and lo > hi:
            raise ValueError(f"--dates range {item!r} starts after it ends")
    return items


def dates_filter(dates: Iterable[str]) -> pc.Expression:
    """The ``dt`` partition filter of :func:`parse_dates` items (days and inclusive ranges, OR-ed)."""
    items = parse_dates(list(dates))
    dt = pc.field("dt")
    days = [x for x in items if ".." not in x]
    expr = dt.isin(days) if days else None
    for item in items:
        if ".." not in item:
            continue
        lo, _, hi = item.partition("..")
        cond = (dt >= lo) & (dt <= hi) if lo and hi else (dt >= lo if lo else dt <= hi)
        expr = cond if expr is None else expr | cond
    return expr
