"""MODEL_CARD.md (#19 item 6): Hugging Face style front matter with metric values, usage, metric
definitions, training data and budget, and the warnings a demo model must carry."""

from __future__ import annotations

import json

import yaml

from vtag.models.model_card import METRIC_DEFINITIONS, model_card, warnings_for

VAL = {"n": 100, "leaf_acc": 0.321, "hp": 0.61, "hr": 0.59, "hf1": 0.599, "auprc": 0.4, "violations": 0.0,
       "level1_acc": 0.8}


def _config(data: str, weights_file=None, stopped="early_stop") -> dict:
    return {
        "modalities": ["text", "image", "context"],
        "image": {"backbone": "mobilenetv3_small_050", "weights_file": weights_file},
        "bundle": {"model_version": "abc123", "model_label": "demo", "created_at": "2026-11-20T00:00:00+00:00",
                   "train": {"data": data, "dates": "2026-10-21 .. 2026-10-21 (1 days)", "rows": 12000,
                             "epochs": 1, "seconds": 240.0, "stopped": stopped,
                             "ids": {"train": {"count": 9600, "sha256": "f" * 64},
                                     "validation": {"count": 2400, "sha256": "e" * 64}}}},
    }


def _front(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_the_demo_model_card_warns_and_carries_metadata(tmp_path, tiny_taxonomy):
    day = tmp_path / "dumps-labeled" / "dt=2026-10-21"
    day.mkdir(parents=True)
    (day / "_manifest.json").write_text(json.dumps({"rows": 12000, "generator_version": 3}))
    card = model_card(_config(str(tmp_path / "dumps-labeled"), stopped="time_budget"), tiny_taxonomy, {"validation": VAL})
    meta = _front(card)
    assert meta["library_name"] == "vtag" and meta["license"] and meta["synthetic_training_data"] is True
    assert meta["datasets"] == [str(tmp_path / "dumps-labeled")]
    assert meta["taxonomy"] == {"label": tiny_taxonomy.label or "", "version": tiny_taxonomy.version}
    got = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert got["hf1"] == 0.599 and got["leaf_acc"] == 0.321
    body = card.split("---\n", 2)[2]
    warning = body[body.index("> [!WARNING]"):body.index("## Usage")]
    for needle in ("synthetic data", "Random image weights", "time budget"):
        assert needle in warning, needle
    assert "Predictor.load(" in body and ".predict(rows)" in body and "vtag tag --date" in body
    assert "from vtag.models import Predictor" in body  # the exported name (tests/test_packaging.py imports it)
    for k in METRIC_DEFINITIONS:
        assert f"- **{k}**:" in body
    assert "train video ids: 9600" in body and "stopped: time_budget" in body


def test_a_real_data_pretrained_converged_model_has_no_warning(tmp_path, tiny_taxonomy):
    (tmp_path / "real" / "dt=2026-10-21").mkdir(parents=True)  # no generator manifest: not synthetic
    config = _config(str(tmp_path / "real"), weights_file="/models/mobilenet.safetensors")
    assert warnings_for(config) == []
    card = model_card(config, tiny_taxonomy, {"validation": VAL})
    assert "[!WARNING]" not in card and _front(card)["synthetic_training_data"] is False


def test_the_card_lists_what_was_chosen_on_the_validation_rows(tiny_taxonomy):
    metrics = {"validation": VAL, "tfidf_mix": {"scale": 16.0, "text_scale": 8.0, "rule": "nll"},
               "temperature": {"temperature": 3.3, "nll": 1.57, "nll_at_1": 2.9},
               "profile_evidence": {"scale": 3.0}, "stop_threshold": 0.4, "decode_primary": "top_leaf",
               "label_nodes": 12}
    body = model_card(_config("/data/real"), tiny_taxonomy, metrics).split("---\n", 2)[2]
    section = body[body.index("## Chosen on the validation rows"):body.index("## Metric definitions")]
    for needle in ("SVM's weight in the logits: 16", "text-only SVM 8", "lowest validation log-loss",
                   "head temperature: 3.3", "evidence weight: 3", "stop threshold: 0.4",
                   "path of the top-scoring leaf", "one of the 12 nodes the training labels name"):
        assert needle in section, needle
    assert "## Chosen on the validation rows" not in model_card(_config("/data/real"), tiny_taxonomy, {"validation": VAL})


def test_the_card_counts_rows_dropped_for_their_labels(tiny_taxonomy):
    config = _config("/data/real")
    assert "rows dropped" not in model_card(config, tiny_taxonomy, {"validation": VAL})
    config["bundle"]["train"].update(rows_dropped=7, unknown_labels={"9001": 5, "9002": 1})
    body = model_card(config, tiny_taxonomy, {"validation": VAL})
    assert ("- rows dropped (no label, or a primary label outside the taxonomy): 7; most frequent unknown "
            "labels: `9001` 5, `9002` 1") in body


def test_the_card_names_its_validation_rows_and_shows_the_model_as_shipped(tmp_path, tiny_taxonomy):
    """The metrics are of the model the bundle ships (SVM mix, temperature, decoding chosen on the
    validation rows) beside the network alone, on validation rows the card describes as they were
    split (the latest days, not "held-out uploaders", for a time split)."""
    from vtag.models.model_card import split_text

    config = _config(str(tmp_path / "real"), weights_file="/models/mobilenet.safetensors")
    config["bundle"]["train"]["validation_split"] = {"kind": "later", "rows": 1392, "returning": 0.679,
                                                     "first": "2023-10-08", "last": "2023-10-13"}
    shipped = {**VAL, "leaf_acc": 0.7004, "hf1": 0.7461, "replayed": True,
               "uploaders": {"returning": {"rows": 950, "share": 0.68, "leaf_acc": 0.871},
                             "new": {"rows": 442, "share": 0.32, "leaf_acc": 0.3462}}}
    card = model_card(config, tiny_taxonomy, {"validation": {**VAL, "shipped": shipped}})
    meta = _front(card)
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"]["split"] == ("validation (the latest 1392 rows by upload time, 2023-10-08 .. 2023-10-13; "
                                          "68% from uploaders with training rows)")
    assert {m["type"]: m["value"] for m in result["metrics"]}["leaf_acc"] == 0.7004
    body = card.split("---\n", 2)[2]
    assert "## Validation metrics (the latest 1392 rows by upload time" in body
    assert "| leaf_acc | 0.7004 | 0.3210 |" in body and "uploader profiles replayed day by day" in body
    assert "| leaf_acc, returning uploaders (950 rows) | 0.8710 | |" in body
    assert "| leaf_acc, new uploaders (442 rows) | 0.3462 | |" in body
    assert "held-out uploaders" not in card
    # an old bundle without the record, a grouped split, another one
    assert split_text(None) == "held-out rows"
    assert split_text({"kind": "held_out_uploaders", "rows": 50, "returning": 0.0}) == \
        "50 rows of uploaders held out of training"
    assert split_text({"kind": "other", "rows": 9, "returning": 0.5, "first": None}) == \
        "9 rows; 50% from uploaders with training rows"
    plain = model_card(_config(str(tmp_path / "real")), tiny_taxonomy, {"validation": VAL})
    assert "| metric | value |" in plain and "## Validation metrics (held-out rows)" in plain
