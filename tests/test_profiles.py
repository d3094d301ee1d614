"""Uploader profiles as a model input (models/profiles.py): leakage-free training profiles, the
feature vector, the bundle's table, and the Predictor's choice between frame columns and bundle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.builders import tiny_config, tiny_frame, tiny_taxonomy, tmp_root
from vtag.models.profiles import (
    LEAF_COL,
    N_COL,
    ProfileFeaturizer,
    ProfileTable,
    leakage_free_profiles,
    resolve_mode,
)


def _rows(tax, spec):
    """``spec``: list of (uploader, leaf index, day) -> a labeled frame."""
    leaves = list(tax.leaf_ids)
    return pd.DataFrame({
        "video_id": [f"v{i}" for i in range(len(spec))],
        "uploader_id": [u for u, _, _ in spec],
        "labels": [[leaves[k]] for _, k, _ in spec],
        "upload_ts": [pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=d) for _, _, d in spec],
    })


def test_time_profiles_count_only_strictly_earlier_rows_of_the_same_uploader():
    tax = tiny_taxonomy()
    leaves = list(tax.leaf_ids)
    frame = _rows(tax, [("a", 0, 0), ("a", 1, 1), ("a", 1, 1), ("a", 2, 3), ("b", 0, 2), (None, 0, 5)])
    n, counts = leakage_free_profiles(frame, tax, "time")
    assert n.tolist() == [0, 1, 1, 3, 0, 0]
    assert counts[0] is None and counts[4] is None and counts[5] is None
    assert counts[1] == {leaves[0]: 1.0} and counts[2] == {leaves[0]: 1.0}  # same time: not each other
    assert counts[3] == {leaves[0]: 1.0, leaves[1]: 2.0}


def test_kfold_profiles_never_hold_the_rows_own_label():
    tax = tiny_taxonomy()
    frame = _rows(tax, [("a", k % 3, 0) for k in range(40)])
    frame["upload_ts"] = pd.NaT
    assert resolve_mode(frame, "auto") == "kfold"
    n, counts = leakage_free_profiles(frame, tax, "auto", folds=5)
    assert (n < 40).all() and (n > 20).all()
    total = {}
    for labels in frame["labels"]:
        total[labels[0]] = total.get(labels[0], 0) + 1
    for i, c in enumerate(counts):  # each row's profile is the uploader's other folds: never all rows
        assert sum(c.values()) == n[i] and all(c[k] <= total[k] for k in c)


def test_profile_vector_is_zero_for_a_new_uploader_and_closed_over_ancestors():
    tax = tiny_taxonomy()
    f = ProfileFeaturizer(tax, alpha=1.0)
    leaf = tax.leaf_ids[0]
    v = f.vectors([0.0, 3.0], [None, {leaf: 3.0}])
    n = tax.n_nodes
    assert v.shape == (2, 2 * n + 2)
    assert not v[0].any()
    q = 1.0 / n  # no table: a uniform prior
    for node in tax.path(leaf):
        assert v[1, tax.index[node]] == pytest.approx(3.0 / 4.0)
        assert v[1, n + tax.index[node]] == pytest.approx(np.log((3.0 + q) / 4.0 / q), rel=1e-5)
    other = next(j for j in range(n) if tax.ids[j] not in tax.path(leaf))
    assert v[1, n + other] == pytest.approx(np.log(0.25), rel=1e-5)  # no video there: evidence against
    assert v[1, -1] == 1.0 and v[1, -2] == pytest.approx(np.log1p(3.0) / 5.0)
    f.table = ProfileTable(tax.version, {"a": (9.0, {leaf: 9.0})})  # the table sets the node prior
    assert np.exp(f.log_prior[tax.index[leaf]]) == pytest.approx((9 + 1) / (9 + n))


def test_frame_columns_win_and_null_falls_back_to_the_table():
    tax = tiny_taxonomy()
    leaves = list(tax.leaf_ids)
    f = ProfileFeaturizer(tax)
    f.table = ProfileTable(tax.version, {"a": (2.0, {leaves[1]: 2.0})})
    frame = pd.DataFrame({"uploader_id": ["a", "a", "new"],
                          N_COL: [1.0, None, None],
                          LEAF_COL: [[(leaves[0], 1.0)], None, None]})  # Arrow maps arrive as pairs
    v = f.transform(frame)
    assert v[0, tax.index[leaves[0]]] > 0 and v[0, tax.index[leaves[1]]] == 0
    assert v[1, tax.index[leaves[1]]] == pytest.approx(2.0 / 3.0)
    assert not v[2].any()


def test_table_round_trips_through_the_profile_schema(tmp_path):
    from vtag.models.schema import UPLOADER_PROFILES_SCHEMA

    tax = tiny_taxonomy()
    table = ProfileTable.from_labels(tiny_frame(), tax)
    arrow = table.to_arrow(tax)
    assert arrow.schema.equals(UPLOADER_PROFILES_SCHEMA)
    table.save(tmp_path / "p.parquet", tax)
    back = ProfileTable.load(tmp_path / "p.parquet", tax.version)
    assert back.profiles == table.profiles
    with pytest.raises(ValueError, match="taxonomy version"):
        ProfileTable.load(tmp_path / "p.parquet", "another-version")


def test_bundle_carries_its_profiles_and_the_predictor_uses_them():
    from vtag.models.bundle import load_bundle
    from vtag.models.predictor import Predictor
    from vtag.models.training import train

    tax, frame = tiny_taxonomy(), tiny_frame()
    cfg = tiny_config(epochs=1)
    cfg["modalities"] = ["text", "context"]
    cfg["context"]["profile"] = {"enabled": True}
    cfg["head"]["wide"] = True
    out = tmp_root() / "bundle"
    train(cfg, tax, frame, out, seed=0, progress=False)
    assert (out / "uploader_profiles.parquet").is_file()
    _, _, featurizer, _, _ = load_bundle(out)
    expected = ProfileTable.from_labels(frame, tax)
    assert featurizer.profiles.profiles == expected.profiles
    pred = Predictor.load(out, device="cpu")
    rows = frame.drop(columns=["labels"]).iloc[:8]
    base = pred.predict(rows)
    # an explicit empty profile on every row changes the scores of rows whose uploader has history
    empty = rows.assign(**{N_COL: 0.0, LEAF_COL: [{}] * len(rows)})
    changed = pred.predict(empty)
    assert list(changed["video_id"]) == list(base["video_id"])
    assert not np.allclose(changed["score"].to_numpy(), base["score"].to_numpy())



def test_profile_dropout_blanks_whole_rows_in_training_only():
    from vtag.models.factory import create_model

    tax, frame = tiny_taxonomy(), tiny_frame()
    cfg = tiny_config()
    cfg["modalities"] = ["text", "context"]
    cfg["context"]["profile"] = {"enabled": True, "dropout": 1.0}
    cfg["head"]["wide"] = True
    cfg["context"]["dropout"] = 0.0
    from vtag.models.featurize import Featurizer

    f = Featurizer.fit(tax, cfg, frame)
    f.profiles = ProfileTable.from_labels(frame, tax)
    model = create_model(cfg, tax, f)
    batch = f.transform(frame)
    assert batch["profile"].abs().sum() > 0
    blank = {**batch, "profile": batch["profile"] * 0}
    for m in model.modules():  # compare the profile effect alone: no other dropout in train mode
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    model.encoders["context"].id_dropout = 0.0
    model.train()
    assert torch.allclose(model(batch)["prob"], model(blank)["prob"])  # dropout 1: every row blanked
    model.eval()
    assert not torch.allclose(model(batch)["prob"], model(blank)["prob"])  # never at prediction time
