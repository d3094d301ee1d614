"""vtag.models.provenance: what a bundle trained and validated on (ids, and the split in words)."""

import pandas as pd

from vtag.models.provenance import describe_split


def _rows(uploaders, days):
    return pd.DataFrame({"video_id": [f"v{i}" for i in range(len(uploaders))], "uploader_id": uploaders,
                         "upload_ts": pd.to_datetime(days, utc=True)})


def test_a_time_split_is_later_with_its_share_of_returning_uploaders():
    train = _rows(["a", "b", "c", None], ["2024-05-01", "2024-05-02", "2024-05-03", None])
    val = _rows(["a", "d", "b", None], ["2024-05-03", "2024-05-04", "2024-05-05", "2024-05-05"])
    assert describe_split(train, val) == {"kind": "later", "rows": 4, "returning": 0.5,
                                          "first": "2024-05-03", "last": "2024-05-05"}


def test_held_out_uploaders_and_other_splits():
    train = _rows(["a", "b"], ["2024-05-01", "2024-05-09"])
    assert describe_split(train, _rows(["c", "d"], ["2024-05-02", "2024-05-03"]))["kind"] == "held_out_uploaders"
    other = describe_split(train, _rows(["a", "d"], ["2024-05-02", "2024-05-03"]))
    assert other["kind"] == "other" and other["returning"] == 0.5
    # no times, no uploaders, no rows
    bare = pd.DataFrame({"video_id": ["x"]})
    assert describe_split(bare, bare) == {"kind": "other", "rows": 1, "returning": 0.0, "first": None, "last": None}
    assert describe_split(train, train.iloc[:0])["rows"] == 0
