"""vtag.models.history_groups: evaluated rows grouped by what the model knew of their uploader."""

import numpy as np
import pandas as pd
import pytest

from vtag.models.history_groups import GROUPS, evaluate_by_group, uploader_history_groups


def _frame(uploaders):
    return pd.DataFrame({"video_id": [f"v{i}" for i in range(len(uploaders))], "uploader_id": uploaders})


def test_training_uploaders_come_first_then_the_replayed_history():
    frame = _frame(["a", "b", "b", None, "c", float("nan")])
    # "a" trained; "b" only from its tags on an earlier day (its second row); "c" never seen
    tag_history = np.array([True, False, True, False, False, False])
    groups = uploader_history_groups(frame, {"a"}, tag_history)
    assert groups.tolist() == ["returning", "new", "tag_history", "no_uploader", "new", "no_uploader"]
    # without a replay nothing is known beyond the training data
    assert uploader_history_groups(frame, {"a"}).tolist() == [
        "returning", "new", "new", "no_uploader", "new", "no_uploader"]


def test_uploader_ids_compare_as_strings_and_a_frame_without_the_column_has_none():
    assert uploader_history_groups(_frame([17, 18]), {"17"}).tolist() == ["returning", "new"]
    assert uploader_history_groups(pd.DataFrame({"video_id": ["v0"]}), {"a"}).tolist() == ["no_uploader"]
    with pytest.raises(ValueError, match="tag_history has 1 rows, the frame 2"):
        uploader_history_groups(_frame(["a", "b"]), set(), np.array([True]))


def test_each_group_with_rows_is_scored_on_its_own_rows_in_report_order():
    groups = np.array(["new", "returning", "new", "returning", "returning"], dtype=object)
    right = np.array([False, True, True, True, False])
    out = evaluate_by_group(groups, lambda m: {"leaf_acc": float(right[m].mean())})
    assert list(out) == ["returning", "new"]  # GROUPS order; empty groups left out
    assert out["returning"] == {"rows": 3, "share": 0.6, "leaf_acc": pytest.approx(2 / 3)}
    assert out["new"] == {"rows": 2, "share": 0.4, "leaf_acc": 0.5}
    assert set(out) <= set(GROUPS)
