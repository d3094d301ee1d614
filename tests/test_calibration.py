"""vtag.models.calibration: the flat head's temperature and the log-loss that chooses it and the mix weight."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.builders import tiny_config, tiny_frame, tiny_taxonomy, tmp_root
from vtag.models.calibration import (
    fit_temperature,
    label_leaf_mask,
    largest_within_se,
    mean_nll,
    top_leaf_correct,
)


def _leaves(tax, *ids):
    pos = {int(j): k for k, j in enumerate(tax.leaf_indices)}
    return {pos[tax.index[i]] for i in ids}


def test_the_label_mask_is_the_leaves_at_or_below_the_primary_label():
    tax = tiny_taxonomy()
    frame = pd.DataFrame({"labels": [["game_theme_rpg", "film"], ["game_ip_marvel"], ["no-such-node"], None]})
    mask = label_leaf_mask(tax, frame)
    assert mask.shape == (4, len(tax.leaf_indices))
    assert set(np.flatnonzero(mask[0])) == _leaves(tax, "game_theme_rpg")  # the primary label only
    assert set(np.flatnonzero(mask[1])) == _leaves(tax, "game_ip_spiderman", "game_ip_ironman")
    assert not mask[2].any() and not mask[3].any()


def test_the_log_loss_of_an_internal_label_is_the_mass_of_its_leaves():
    logits = np.log(np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]))
    mask = np.array([[False, True, True], [True, False, False]])
    want = np.mean([-np.log(0.5), -np.log(0.1)])
    assert mean_nll(logits, mask) == pytest.approx(want)
    assert mean_nll(np.vstack([logits, logits[:1]]), np.vstack([mask, np.zeros((1, 3), bool)])) == pytest.approx(want)
    with pytest.raises(ValueError, match="known label"):
        mean_nll(logits, np.zeros_like(mask))


@pytest.mark.parametrize("true_t", [0.2, 3.0, 40.0])
def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at(true_t):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, size=(6000, 12))
    p = np.exp(z / true_t - (z / true_t).max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(12, p=row) for row in p])
    mask = np.eye(12, dtype=bool)[y]
    t, nll = fit_temperature(z, mask)
    assert t == pytest.approx(true_t, rel=0.1)
    assert nll <= mean_nll(z, mask, 1.0) + 1e-9
    assert nll == pytest.approx(mean_nll(z, mask, 1.0 / t))


def test_a_flat_head_divides_its_logits_by_the_temperature_and_keeps_it_in_its_state():
    from vtag.models.dhmcn import HierarchySpec, create_head

    spec = HierarchySpec.from_taxonomy(tiny_taxonomy())
    torch.manual_seed(0)
    plain = create_head({"name": "flat", "hidden": 0}, spec, 8).eval()
    assert "temperature" not in plain.state_dict()  # the default: bundles from before the key load as before
    tempered = create_head({"name": "flat", "hidden": 0, "temperature": "auto"}, spec, 8).eval()
    tempered.load_state_dict({**plain.state_dict(), "temperature": torch.tensor(4.0)})
    x = torch.randn(5, 8)
    a, b = plain(x), tempered(x)
    torch.testing.assert_close(b["leaf_logits"], a["leaf_logits"] / 4.0)
    assert torch.equal(a["leaf_logits"].argmax(1), b["leaf_logits"].argmax(1))
    top_a, top_b = (torch.softmax(o["leaf_logits"], 1).max(1).values for o in (a, b))
    assert bool((top_b < top_a).all())  # a temperature above 1 softens every row's top leaf
    assert float(create_head({"name": "flat", "temperature": 2.5}, spec, 8).temperature) == 2.5
    with pytest.raises(ValueError, match="needs head.name: flat"):
        create_head({"name": "dhmcn_v3", "temperature": "auto"}, spec, 8)
    with pytest.raises(ValueError, match="'auto' or a number > 0"):
        create_head({"name": "flat", "temperature": 0}, spec, 8)


@pytest.mark.slow
def test_training_calibrates_the_mixed_model_and_the_bundle_keeps_the_temperature():
    """``head.temperature: auto`` with the SVM mix chosen by log-loss: the recorded temperature lowers
    the validation log-loss and travels in the bundle (the reloaded bundle scores as the trained model)."""
    from vtag.models.predictor import Predictor
    from vtag.models.training import train

    cfg = tiny_config(epochs=1)
    cfg["modalities"] = ["text", "context"]
    cfg["text"]["bow"].update({"min_count": 1})
    cfg["head"] = {"name": "flat", "hidden": 32, "tfidf_wide": "mix", "temperature": "auto"}
    out = tmp_root() / "calibrated"
    frame = tiny_frame(n=96, seed=3)
    res = train(cfg, tiny_taxonomy(), frame, out, progress=False, label="calibrated")
    mix, cal = res.metrics["tfidf_mix"], res.metrics["temperature"]
    assert mix["rule"] == "largest_within_se" and all(0 <= v <= 1 for v in mix["validation"].values())  # accuracy
    assert mix["scale"] in {float(k) for k in mix["validation"]}
    assert cal["nll"] <= cal["nll_at_1"] + 1e-9
    pred = Predictor.load(out, device="cpu")
    assert float(pred.model.head.temperature) == pytest.approx(cal["temperature"])
    rows = frame.head(16)
    from vtag.models.predictor import infer_proba

    trained, _ = infer_proba(res.model, res.featurizer, rows, device="cpu")
    reloaded, _ = infer_proba(pred.model, pred.featurizer, rows, device="cpu")
    np.testing.assert_allclose(reloaded, trained, rtol=1e-5, atol=1e-6)
    if abs(cal["temperature"] - 1.0) > 1e-3:
        pred.model.head.temperature.fill_(1.0)
        assert not np.allclose(infer_proba(pred.model, pred.featurizer, rows, device="cpu")[0], reloaded, atol=1e-4)


@pytest.mark.slow
def test_a_warm_start_from_a_calibrated_model_trains_at_temperature_1():
    """Without validation rows nothing is chosen after training, so the temperature the run ends
    with is the one it trained at: 1, not the start's 5."""
    from vtag.models.training import train

    cfg = tiny_config(epochs=1, val_fraction=0.0)
    cfg["modalities"] = ["text", "context"]
    cfg["head"] = {"name": "flat", "hidden": 32, "temperature": "auto"}
    frame = tiny_frame(n=64, seed=3)
    first = train(cfg, tiny_taxonomy(), frame, tmp_root() / "first", progress=False, label="first")
    start = {k: v.clone() for k, v in first.model.state_dict().items()}
    start["head.temperature"] = torch.tensor(5.0)
    again = train(cfg, tiny_taxonomy(), frame, tmp_root() / "again", progress=False, label="again",
                  init_weights=start)
    assert again.val_rows == 0 and "temperature" not in again.metrics
    assert float(again.model.head.temperature) == 1.0


def test_top_leaf_correct_is_the_argmax_under_the_label_for_labeled_rows_only():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [5.0, 0.0, 0.0]])
    mask = np.array([[True, False, False], [True, False, True], [False, False, False]])  # row 2: no label
    np.testing.assert_array_equal(top_leaf_correct(logits, mask), [True, False])
    np.testing.assert_array_equal(top_leaf_correct(logits / 7.0, mask), [True, False])  # any temperature


def test_the_largest_weight_not_clearly_less_accurate_than_the_best_is_chosen():
    n = 400
    right = np.ones(n, dtype=bool)

    def wrong(k, start=0):  # rows start .. start + k - 1 wrong
        c = right.copy()
        c[start:start + k] = False
        return c

    # 64 is 3 rows behind 16 with 5 rows discordant (se sqrt(5) = 2.2 rows): clearly less accurate
    results = {0.0: wrong(60), 2.0: wrong(40), 16.0: wrong(2), 64.0: wrong(5, 1)}
    assert largest_within_se(results) == 16.0
    # 1 row behind with 5 discordant: within one standard error, so the larger weight
    results[64.0] = wrong(3, 100)
    assert largest_within_se(results) == 64.0
    # nested errors: 2 rows apart with 2 discordant is more than sqrt(2) rows
    assert largest_within_se({4.0: wrong(10), 16.0: wrong(12)}) == 4.0
    # equal accuracy keeps the larger weight; one candidate is its own answer
    assert largest_within_se({8.0: wrong(1), 4.0: wrong(1)}) == 8.0
    assert largest_within_se({3.0: wrong(9)}) == 3.0
    with pytest.raises(ValueError):
        largest_within_se({})


def test_an_unknown_mix_rule_is_refused_when_the_config_resolves():
    from vtag.models.model_config import resolve_config

    with pytest.raises(ValueError, match="tfidf_wide_mix_rule"):
        resolve_config({"head": {"tfidf_wide_mix_rule": "accuracy"}})
    assert resolve_config({})["head"]["tfidf_wide_mix_rule"] == "largest_within_se"
