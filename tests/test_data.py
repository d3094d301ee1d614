"""vtag.models.data's label checks: what training and ``vtag evaluate`` drop or leave unscored, counted."""

from __future__ import annotations

import logging

import pandas as pd

from tests.builders import tiny_taxonomy
from vtag.models.data import check_labels, label_summary


def _frame(labels: list) -> pd.DataFrame:
    return pd.DataFrame({"video_id": [f"v{i}" for i in range(len(labels))], "labels": labels})


def test_label_summary_counts_missing_unknown_and_extra_labels():
    tax = tiny_taxonomy()
    leaf = tax.ids[int(tax.leaf_indices[0])]
    frame = _frame([[leaf], None, [], ["9001"], ["9001", leaf], ["9002"], [leaf, "nope", "nope2"]])
    assert label_summary(frame, tax) == {"rows_without_label": 2, "rows_unknown_label": 3,
                                         "unknown_labels": {"9001": 2, "9002": 1}, "unknown_extra_tags": 2}
    assert label_summary(frame, tax, top=1)["unknown_labels"] == {"9001": 2}


def test_check_labels_keeps_known_primaries_and_names_the_unknown_ones(caplog):
    tax = tiny_taxonomy()
    leaf = tax.ids[int(tax.leaf_indices[0])]
    frame = _frame([[leaf, "nope"], ["9001"], None, [leaf]])
    with caplog.at_level(logging.WARNING, logger="vtag.models.data"):
        out = check_labels(frame, tax)
    assert out["video_id"].tolist() == ["v0", "v3"]
    assert out["labels"].tolist() == [[leaf], [leaf]]
    msg = caplog.text
    assert "dropped 1 rows without a label, 1 rows whose primary label is not in taxonomy" in msg
    assert "'9001' 1" in msg and "1 unknown extra tags" in msg


def test_check_labels_is_quiet_on_clean_labels(caplog):
    tax = tiny_taxonomy()
    leaf = tax.ids[int(tax.leaf_indices[0])]
    with caplog.at_level(logging.WARNING, logger="vtag.models.data"):
        out = check_labels(_frame([[leaf], [leaf]]), tax)
    assert len(out) == 2 and not caplog.text


def test_latest_per_video_keeps_each_videos_latest_row_in_frame_order():
    from vtag.models.data import latest_per_video

    frame = pd.DataFrame({
        "video_id": ["a", "b", "a", None, "c", "b", None, "a"],
        "dt": ["2024-05-02", "2024-05-01", "2024-05-03", "2024-05-01", "2024-05-01", "2024-05-01", None,
               "2024-05-01"],
        "labels": [["x1"], ["y1"], ["x2"], ["n1"], ["z"], ["y2"], ["n2"], ["x0"]],
    })
    out, dropped = latest_per_video(frame)
    # a: 05-03 wins over 05-02 and the later-listed 05-01; b: a tie on 05-01 goes to the last listed
    assert out["labels"].tolist() == [["x2"], ["n1"], ["z"], ["y2"], ["n2"]]
    assert dropped == 3
    same, none = latest_per_video(frame.drop(columns=["dt"]).iloc[[0, 1, 4]])
    assert none == 0 and same["video_id"].tolist() == ["a", "b", "c"]


# ---------------------------------------------------------------------- reading some days
def _three_days(root):
    from vtag.models.data import write_dump

    for i, day in enumerate(("2024-05-01", "2024-05-02", "2024-05-03")):
        write_dump(pd.DataFrame({"video_id": [f"v{i}a", f"v{i}b"], "title": ["甲", "乙"], "uploader_id": ["u1", "u2"],
                                 "upload_ts": pd.to_datetime([f"{day} 08:00", f"{day} 09:00"], utc=True),
                                 "labels": [["a"], ["b"]]}), root, day)


def test_read_dumps_takes_days_and_ranges(tmp_path):
    from vtag.models.data import read_dumps

    _three_days(tmp_path / "d")
    assert sorted(set(read_dumps(tmp_path / "d", dates="..2024-05-02")["dt"])) == ["2024-05-01", "2024-05-02"]
    assert list(read_dumps(tmp_path / "d", dates="2024-05-03..")["video_id"]) == ["v2a", "v2b"]
    assert len(read_dumps(tmp_path / "d", dates="2024-05-01,2024-05-03..2024-05-09")) == 4
    assert len(read_dumps(tmp_path / "d")) == 6


def test_read_dumps_refuses_days_that_select_nothing(tmp_path):
    import pytest

    from vtag.models.data import DumpError, read_dumps

    _three_days(tmp_path / "d")
    with pytest.raises(DumpError, match=r"selected by --dates 2024-06-01\.\.; days there: "
                                        r"2024-05-01 \.\. 2024-05-03 \(3 partitions\)"):
        read_dumps(tmp_path / "d", dates="2024-06-01..")
    flat = tmp_path / "flat"
    flat.mkdir()
    (tmp_path / "d" / "dt=2024-05-01" / "part-0.parquet").rename(flat / "part-0.parquet")
    with pytest.raises(DumpError, match="has no dt=YYYY-MM-DD partitions"):
        read_dumps(flat, dates="2024-05-01")
    with pytest.raises(ValueError, match="is not a day"):
        read_dumps(tmp_path / "d", dates="May 1st")
