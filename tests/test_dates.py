"""vtag.models.dates: the ``--dates`` days and ranges of ``vtag train`` / ``vtag evaluate``."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtag.models.dates import dates_filter, parse_dates


def test_parse_dates_keeps_days_and_ranges_in_order():
    assert parse_dates(" 2023-08-19 , ..2023-09-01,2023-10-13..,2023-08-01..2023-08-02,") == [
        "2023-08-19", "..2023-09-01", "2023-10-13..", "2023-08-01..2023-08-02"]
    assert parse_dates(["2023-08-19"]) == ["2023-08-19"]
    assert parse_dates(None) is None


@pytest.mark.parametrize("spec,message", [
    ("2023-8-19", "is not a day"),
    ("20230819", "is not a day"),
    ("..", "is not a day"),
    ("2023-08-19...2023-08-20", "is not a day"),
    ("2023-02-30", "day is out of range"),
    ("2023-09-02..2023-09-01", "starts after it ends"),
    (" , ", "no day given"),
])
def test_parse_dates_refuses_what_is_not_a_day_or_a_range(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_dates(spec)


_days = st.dates(dt.date(2023, 1, 1), dt.date(2023, 3, 31)).map(dt.date.isoformat)


@settings(max_examples=60, deadline=None)
@given(held=st.lists(_days, min_size=1, max_size=30), day=_days, lo=st.one_of(st.none(), _days),
       hi=st.one_of(st.none(), _days))
def test_dates_filter_selects_exactly_the_days_and_ranges_given(held, day, lo, hi):
    if lo is None and hi is None or (lo and hi and lo > hi):
        items = [day]
    else:
        items = [day, f"{lo or ''}..{hi or ''}"]
    table = pa.table({"dt": held})
    got = table.filter(dates_filter(items)).column("dt").to_pylist()
    want = [d for d in held if d == day or (len(items) == 2 and (lo is None or d >= lo) and (hi is None or d <= hi))]
    assert got == want
