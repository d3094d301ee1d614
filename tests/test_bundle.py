"""The model bundle: files, no pickle, round trip, identity hashes, taxonomy version checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from tests.builders import tiny_bundle, tiny_taxonomy, tmp_root
from vtag.models.bundle import (
    BUNDLE_FILES,
    BundleError,
    load_bundle,
    read_meta,
    read_vocab,
    write_vocab,
)
from vtag.models.predictor import Predictor, TaxonomyMismatchError, infer_proba


def test_bundle_has_exactly_the_design_files_and_no_pickle():
    out, tax, _, res = tiny_bundle()
    from vtag.models.provenance import IDS_FILE

    files = sorted(p.name for p in out.iterdir() if p.is_file())
    # the design's files, plus the optional id fingerprints of the training rows (vtag evaluate's overlap check)
    assert sorted(set(files) - {IDS_FILE}) == sorted(BUNDLE_FILES) and IDS_FILE in files
    for name in files:
        head = (out / name).read_bytes()[:2]
        assert head != b"\x80\x04" and head[:1] != b"\x80", f"{name} looks pickled"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["bundle"]["model_version"] == res.model_version
    assert cfg["bundle"]["taxonomy_version"] == tax.version
    assert cfg["preprocessing"]["image"]["input_size"] == [3, 32, 32]
    assert cfg["image"]["backbone"] == "mobilenetv3_small_050"  # resolved config, not just overrides
    assert "fusion" in cfg and "head" in cfg and "decode" in cfg
    snap = yaml.safe_load((out / "taxonomy.yaml").read_text())
    assert snap["version"] == tax.version
    metrics = json.loads((out / "metrics.json").read_text())
    assert "validation" in metrics and "history" in metrics
    # the validation rows scored as the bundle ships the model, beside the best epoch's network alone
    shipped = metrics["validation"]["shipped"]
    assert 0.0 <= shipped["leaf_acc"] <= 1.0 and shipped["n"] == metrics["validation"]["n"]
    # the toy rows carry upload times: validation is their latest rows, and the card says so
    split = cfg["bundle"]["train"]["validation_split"]
    assert split["kind"] == "later" and split["rows"] == metrics["validation"]["n"] == res.val_rows
    card = (out / "MODEL_CARD.md").read_text()
    for part in ("## Training data", "## Validation metrics (the latest", "| as shipped |", "## Intended use",
                 "## Limits", "level1_acc"):
        assert part in card
    assert (out / "model.safetensors").stat().st_mode & 0o044  # readable by executors running as others


def test_round_trip_gives_identical_predictions():
    out, tax, frame, res = tiny_bundle()
    expected, _ = infer_proba(res.model, res.featurizer, frame, batch_size=64, device="cpu")
    config, tax2, featurizer, model, meta = load_bundle(out)
    assert tax2.version == tax.version and meta.model_version == res.model_version
    assert featurizer.vocab == res.featurizer.vocab
    got, _ = infer_proba(model, featurizer, frame, batch_size=64, device="cpu")
    np.testing.assert_array_equal(got, expected)
    a = Predictor.load(out, device="cpu").predict(frame)
    b = Predictor.load(out, device="cpu").predict(frame)
    assert a.equals(b)


def test_model_version_is_a_content_hash():
    out, _, _, res = tiny_bundle()
    copy = tmp_root() / "copy"
    shutil.copytree(out, copy)
    assert read_meta(copy).model_version == res.model_version
    load_bundle(copy)  # verifies
    # a changed weight byte is detected
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="hash"):
        load_bundle(copy)


def test_edited_taxonomy_snapshot_is_detected():
    out, _, _, _ = tiny_bundle()
    copy = tmp_root() / "copy"
    shutil.copytree(out, copy)
    text = (copy / "taxonomy.yaml").read_text().replace("name: 烘焙", "name: 面包")
    (copy / "taxonomy.yaml").write_text(text)
    with pytest.raises(BundleError, match="version"):
        load_bundle(copy)


def test_missing_file_is_a_clear_error():
    out, _, _, _ = tiny_bundle()
    copy = tmp_root() / "copy"
    shutil.copytree(out, copy)
    (copy / "vocab.txt").unlink()
    with pytest.raises(BundleError, match="vocab.txt"):
        Predictor.load(copy, device="cpu")


def test_taxonomy_version_mismatch_is_refused_unless_allowed():
    out, tax, frame, _ = tiny_bundle()
    with pytest.raises(TaxonomyMismatchError, match=tax.version):
        Predictor.load(out, device="cpu", expected_taxonomy_version="0123456789abcdef")
    p = Predictor.load(out, device="cpu", expected_taxonomy_version="0123456789abcdef", allow_taxonomy_mismatch=True)
    assert (p.predict(frame.iloc[:2])["taxonomy_version"] == tax.version).all()
    # the matching version (a string or a Taxonomy) loads
    Predictor.load(out, device="cpu", expected_taxonomy_version=tax.version)
    Predictor.load(out, device="cpu", expected_taxonomy_version=tiny_taxonomy())


def test_vocab_escaping_round_trips(tmp_path):
    vocab = ["<pad>", "<unk>", "<sep>", "漫威", "a\\b", "line\nbreak", "cr\rx", "\\n", " ", "#话题"]
    write_vocab(tmp_path / "v.txt", vocab)
    assert read_vocab(tmp_path / "v.txt") == vocab


def test_kept_ngram_keys_travel_in_the_weights_and_survive_resume():
    """``text.bow.min_count`` > 0: the featurizer's kept n-gram buckets are a buffer of the model, so
    a bundle (and a checkpoint to resume from) rebuild the same featurizer from the weights alone."""
    import copy

    from safetensors.torch import load_file

    from tests.builders import tiny_config, tiny_frame
    from vtag.models.bundle import NGRAM_KEYS
    from vtag.models.training import train

    tax, frame = tiny_taxonomy(), tiny_frame()
    cfg = copy.deepcopy(tiny_config(epochs=2))
    cfg["modalities"] = ["text", "context"]
    cfg["text"]["bow"] = {**cfg["text"]["bow"], "buckets": 2**20, "min_count": 2}
    root = tmp_root()
    res = train(cfg, tax, frame, root / "a", progress=False, label="keys")
    keys = res.featurizer.ngram_keys
    assert keys is not None and 0 < keys.size < 2**20
    assert res.model.encoders["text"].bow.bag.weight.shape[0] == keys.size + 1
    assert load_file(str(root / "a" / "model.safetensors"))[NGRAM_KEYS].tolist() == keys.tolist()
    _, _, featurizer, model, _ = load_bundle(root / "a")
    np.testing.assert_array_equal(featurizer.ngram_keys, keys)
    expected, _ = infer_proba(res.model, res.featurizer, frame, batch_size=64, device="cpu")
    got, _ = infer_proba(model, featurizer, frame, batch_size=64, device="cpu")
    np.testing.assert_array_equal(got, expected)
    # stopped after one step, then resumed: the featurizer is rebuilt from the checkpoint's weights
    first = train(cfg, tax, frame, root / "b", progress=False, max_minutes=0)
    assert first.stopped == "time_budget"
    resumed = train(cfg, tax, frame, root / "b", progress=False, resume=True)
    np.testing.assert_array_equal(resumed.featurizer.ngram_keys, keys)
    wa = load_file(str(root / "a" / "checkpoint" / "model.safetensors"))
    wb = load_file(str(root / "b" / "checkpoint" / "model.safetensors"))
    assert all((wa[k] == wb[k]).all() for k in wa), "the resumed run drifted from the straight one"
