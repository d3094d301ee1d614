"""models/training/post.py: the mix weight's grid for DHMCN heads, the SVM's fit rows (the rest of
the module is exercised through training in test_sparse_wide.py, test_node_svm.py and test_calibration.py)."""

from __future__ import annotations

import numpy as np
import pytest

from vtag.models.calibration import largest_within_se
from vtag.models.sparse_wide import MIX_SCALE_GRID, TfidfWide
from vtag.models.training.post import DHMCN_EXTRA_SCALES, choose_mix, rising_at_top


def _correct(n_right: int, n: int = 200) -> np.ndarray:
    return np.arange(n) < n_right


def test_rising_at_top_only_when_the_largest_weight_is_strictly_best():
    assert rising_at_top({1.0: _correct(10), 64.0: _correct(11)})
    assert not rising_at_top({1.0: _correct(11), 64.0: _correct(11)})
    assert not rising_at_top({1.0: _correct(12), 32.0: _correct(15), 64.0: _correct(14)})


def _module_and_score(peak: float):
    """A mix module and a validation score whose accuracy rises with the weight up to ``peak`` and
    falls past it."""
    module = TfidfWide(5, 3, max_params=100, df=np.ones(5), n_docs=5, mix=True)
    calls = []

    def score():
        s = float(module.scale)
        calls.append(s)
        return _correct(int(100 + 60 * s / peak) if s <= peak else 40)

    return module, score, calls


def test_a_dhmcn_mix_goes_past_the_grid_while_validation_still_rises():
    module, score, calls = _module_and_score(peak=256.0)
    info = choose_mix(module, score, largest_within_se, extend=True)
    assert info["scale"] == 256.0 == float(module.scale)
    assert set(calls) == set(MIX_SCALE_GRID) | set(DHMCN_EXTRA_SCALES)


def test_the_flat_head_and_a_peak_inside_the_grid_keep_the_grid():
    module, score, calls = _module_and_score(peak=256.0)
    assert choose_mix(module, score, largest_within_se, extend=False)["scale"] == max(MIX_SCALE_GRID)
    assert set(calls) == set(MIX_SCALE_GRID)
    module, score, calls = _module_and_score(peak=16.0)
    assert choose_mix(module, score, largest_within_se, extend=True)["scale"] == 16.0
    assert set(calls) == set(MIX_SCALE_GRID)


def test_primary_correct_is_the_label_or_a_node_below_it():
    from tests.builders import tiny_taxonomy
    from vtag.models.training.post import primary_correct

    tax = tiny_taxonomy()
    deep = next(n.id for n in tax.nodes if len(tax.path(n.id)) == 3)
    top, mid = (tax.index[x] for x in tax.path(deep)[:2])
    leaf = tax.index[deep]
    other = next(tax.index[n.id] for n in tax.nodes if n.level == 1 and n.id != tax.path(deep)[0])
    primary = np.array([leaf, mid, top, other, -1])
    label = np.array([top, mid, mid, top, top])
    np.testing.assert_array_equal(primary_correct(tax, primary, label), [True, True, False, False, False])


def test_svm_fit_rows_keeps_the_latest_rows_or_a_seeded_sample():
    import pandas as pd

    from vtag.models.training.post import svm_fit_rows

    ts = pd.to_datetime(["2024-05-03", None, "2024-05-01", "2024-05-04", "2024-05-02"], utc=True)
    frame = pd.DataFrame({"video_id": list("abcde"), "upload_ts": ts})
    assert svm_fit_rows(frame, 0, 0) is frame and svm_fit_rows(frame, 5, 0) is frame  # no cap / covers all
    assert svm_fit_rows(frame, 2, 0)["video_id"].tolist() == ["a", "d"]  # the latest two, in frame order
    assert svm_fit_rows(frame, 4, 0)["video_id"].tolist() == ["a", "c", "d", "e"]  # no upload time: earliest
    untimed = frame.assign(upload_ts=pd.NaT)
    picked = svm_fit_rows(untimed, 3, seed=1)["video_id"].tolist()
    assert len(set(picked)) == 3 and picked == sorted(picked)
    assert picked == svm_fit_rows(untimed, 3, seed=1)["video_id"].tolist()  # seeded
    assert any(svm_fit_rows(untimed, 3, seed=s)["video_id"].tolist() != picked for s in range(2, 8))


def test_tfidf_wide_fit_rows_caps_the_svm_and_its_uploader_columns_to_the_latest_rows():
    from tests.builders import tiny_config, tiny_frame, tiny_taxonomy, tmp_root
    from vtag.models.context import uploader_keys
    from vtag.models.model_config import resolve_config
    from vtag.models.training import train
    from vtag.models.training.post import svm_fit_rows

    cfg = tiny_config(epochs=1)
    cfg["modalities"] = ["text", "context"]
    cfg["text"]["bow"].update({"min_count": 1})
    cfg["head"] = {"name": "flat", "hidden": 32, "tfidf_wide": "mix", "tfidf_wide_uploader": "exact",
                   "tfidf_wide_new_uploader_svm": True, "tfidf_wide_fit_rows": 30}
    frame = tiny_frame(n=96, seed=5).copy()
    frame["uploader_id"] = [f"u{i}" for i in range(len(frame))]  # one uploader per row: columns name the rows
    res = train(cfg, tiny_taxonomy(), frame, tmp_root() / "fit-rows-bundle", progress=False, label="fit-rows")
    assert res.metrics["tfidf_refit_rows"] == 30
    latest = set(svm_fit_rows(frame, 30, 0)["uploader_id"])
    wide = res.model.tfidf_wide
    assert wide.uploader_keys.numel() == 30  # the uploaders of the latest 30 rows, not all 96
    assert int(wide.uploader_fitted.sum()) == 30
    assert set(wide.uploader_keys.tolist()) == set(uploader_keys(sorted(latest)).tolist())
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="tfidf_wide_fit_rows"):
            resolve_config({**cfg, "head": {**cfg["head"], "tfidf_wide_fit_rows": bad}})

