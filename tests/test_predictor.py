"""Predictor: output schema, missing/corrupt covers, decoding invariants, micro-batching, devices."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.builders import tiny_bundle
from vtag.models.predictor import Predictor, resolve_device, to_arrow
from vtag.models.schema import PREDICTION_SCHEMA


@pytest.fixture(scope="module")
def predictor():
    out, _, _, _ = tiny_bundle()
    return Predictor.load(out, device="cpu")


def test_output_matches_prediction_schema_exactly(predictor):
    _, _, frame, _ = tiny_bundle()
    out = predictor.predict(frame.iloc[:9])
    assert list(out.columns) == PREDICTION_SCHEMA.names
    assert len(out) == 9
    assert out["video_id"].tolist() == frame["video_id"].iloc[:9].tolist()
    table = to_arrow(out)
    assert table.schema.equals(PREDICTION_SCHEMA, check_metadata=True)
    # pandas -> arrow with no schema given infers the same types (names, order, types)
    inferred = pa.Table.from_pandas(out, preserve_index=False)
    for field in PREDICTION_SCHEMA:
        got = inferred.schema.field(field.name).type
        if pa.types.is_list(field.type) and pa.types.is_struct(field.type.value_type):
            assert pa.types.is_list(got) and pa.types.is_struct(got.value_type)
            names = [got.value_type.field(i).name for i in range(got.value_type.num_fields)]
            assert names == ["node_id", "name", "level", "score"]
        elif field.name == "score":
            assert got == pa.float32()
        elif out[field.name].isna().all():  # an all-null column infers as null
            assert got in (field.type, pa.null()), field.name
        else:
            assert got == field.type, field.name
    arrow = predictor.predict_arrow(frame.iloc[:9])
    assert arrow.schema.equals(PREDICTION_SCHEMA, check_metadata=True)
    assert arrow.to_pylist() == table.to_pylist()


def test_predictions_follow_the_taxonomy(predictor):
    _, tax, frame, _ = tiny_bundle()
    out = predictor.predict(frame)
    excl = [set(g) for g in tax.constraints.exclusive]
    for row in out.itertuples():
        assert row.path == tax.path(row.leaf_id)
        assert row.path_names == tax.path_names(row.leaf_id)
        levels = [row.level1, row.level2, row.level3, row.level4, row.level5]
        assert levels[: len(row.path)] == row.path_names
        assert all(v is None for v in levels[len(row.path):])
        tag_ids = {t["node_id"] for t in row.tags}
        assert set(row.path) <= tag_ids
        for t in row.tags:  # closed under ancestors and requires
            assert set(tax.path(t["node_id"])) <= tag_ids
            assert set(tax.constraints.requires.get(t["node_id"], ())) <= tag_ids
            assert t["level"] == tax.node(t["node_id"]).level and 0.0 <= t["score"] <= 1.0
        for g in excl:
            assert len(g & tag_ids) <= 1
        assert 0.0 < row.score <= 1.0
        assert row.model_version == predictor.model_version


def test_corrupt_and_missing_covers_are_tagged_with_cover_missing(predictor):
    _, _, frame, _ = tiny_bundle()
    rows = frame.iloc[:4].copy()
    covers = rows["cover"].tolist()
    covers[0] = b"\xff\xd8\xff\xe0 this is not a jpeg"
    covers[1] = None
    covers[2] = covers[2][: len(covers[2]) // 3]  # truncated JPEG
    rows["cover"] = covers
    out = predictor.predict(rows)
    assert out["cover_missing"].tolist()[:2] == [True, True]
    assert not out["cover_missing"].iloc[3]
    assert out["leaf_id"].notna().all()  # still tagged, from text and context


def test_micro_batching_does_not_change_results(predictor):
    _, _, frame, _ = tiny_bundle()
    whole = predictor.predict(frame)
    small = Predictor.load(predictor.meta.path, device="cpu")
    small.batch_size = 7
    parts = small.predict(frame)
    assert whole.drop(columns=["tags", "score"]).equals(parts.drop(columns=["tags", "score"]))
    np.testing.assert_allclose(whole["score"], parts["score"], rtol=1e-5, atol=1e-6)


def test_empty_frame_and_missing_optional_columns(predictor):
    _, _, frame, _ = tiny_bundle()
    empty = predictor.predict(frame.iloc[:0])
    decoded, cover = predictor.predict_scores(frame.iloc[:0])
    n = predictor.taxonomy.n_nodes
    assert decoded.labels.shape == (0, n) and decoded.consistent.shape == (0, n) and decoded.leaf.shape == (0,)
    assert decoded.leaf.dtype == np.int64 and cover.shape == (0,) and cover.dtype == bool
    assert list(empty.columns) == PREDICTION_SCHEMA.names and len(empty) == 0
    assert to_arrow(empty).schema.equals(PREDICTION_SCHEMA)
    slim = frame[["video_id", "title", "cover", "uploader_id", "upload_ts"]].iloc[:3]
    assert len(predictor.predict(slim)) == 3


def test_device_strings():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device"):
        resolve_device("gpu0")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda:0")
