"""vtag.hierarchy.metrics against hand-computed cases, scikit-learn and HiClass-style definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import average_precision_score

from vtag.hierarchy.decode import Decoder
from vtag.hierarchy.metrics import (
    auprc_micro,
    evaluate,
    evaluate_by_subtree,
    hierarchical_prf,
    leaf_accuracy,
    level_accuracy,
    violation_rate,
    violations,
)

SETTINGS = settings(max_examples=150, deadline=None)


def _rows(tax, *id_sets):
    """Label matrix with the given ids set (no closure)."""
    out = np.zeros((len(id_sets), tax.n_nodes), dtype=bool)
    for i, ids in enumerate(id_sets):
        out[i, [tax.index[x] for x in ids]] = True
    return out


def _idx(tax, *ids):
    return np.array([tax.index[x] for x in ids])


# ---------------------------------------------------------------------- accuracy
def test_level_accuracy_by_hand(tiny_taxonomy):
    t = tiny_taxonomy
    true = _idx(t, "game_ip_spiderman", "game_ip_spiderman", "food_bake", "film_live")
    pred = _idx(t, "game_ip_ironman", "game_theme_rpg", "food_bake", "film_ip_marvel")
    acc = level_accuracy(t, true, pred)
    # level 1: all four right; level 2: 1st and 3rd right (film_form != film_ip);
    # level 3: only rows 1, 2, 4 reach it — 1st right (game_ip_marvel), 2nd wrong, 4th wrong;
    # level 4: only rows 1, 2 — both wrong (ironman; a level-3 prediction stops above)
    assert acc == {1: 1.0, 2: 0.5, 3: pytest.approx(1 / 3), 4: 0.0}
    assert leaf_accuracy(true, pred) == 0.25


def test_level_accuracy_unreached_level_is_nan(tiny_taxonomy):
    t = tiny_taxonomy
    acc = level_accuracy(t, _idx(t, "food_bake"), _idx(t, "food_home"))
    assert acc[1] == 1.0 and acc[2] == 0.0 and math.isnan(acc[3]) and math.isnan(acc[4])


# ---------------------------------------------------------------------- hP / hR / hF1
def test_hierarchical_prf_by_hand(tiny_taxonomy):
    t = tiny_taxonomy
    true = _rows(t, {"game_ip_spiderman"}, {"food_bake"})
    pred = _rows(t, {"game_ip_ironman", "food_home"}, {"food_bake"})
    # row 1: T = {game, game_ip, game_ip_marvel, game_ip_spiderman}, P = {game, game_ip,
    #   game_ip_marvel, game_ip_ironman, food, food_home}: |T∩P| = 3, |T| = 4, |P| = 6
    # row 2: T = P = {food, food_bake}: 2, 2, 2
    micro = hierarchical_prf(true, pred, "micro", taxonomy=t)
    assert micro.precision == pytest.approx(5 / 8)
    assert micro.recall == pytest.approx(5 / 6)
    assert micro.f1 == pytest.approx(2 * (5 / 8) * (5 / 6) / (5 / 8 + 5 / 6))
    macro = hierarchical_prf(true, pred, "macro", taxonomy=t)
    f1_row1 = 2 * 0.5 * 0.75 / 1.25
    assert macro == pytest.approx(((0.5 + 1) / 2, (0.75 + 1) / 2, (f1_row1 + 1) / 2))


def test_hierarchical_prf_empty_prediction_counts_zero(tiny_taxonomy):
    t = tiny_taxonomy
    true = _rows(t, {"food_bake"}, {"food_home"})
    pred = _rows(t, set(), {"food_home"})
    assert hierarchical_prf(true, pred, "macro", taxonomy=t) == pytest.approx((0.5, 0.5, 0.5))
    assert hierarchical_prf(true, pred, "micro", taxonomy=t).precision == 1.0
    assert hierarchical_prf(true, np.zeros_like(true), "micro") == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="micro"):
        hierarchical_prf(true, pred, "weighted")


def _hiclass_reference(true_paths: list[list[str]], pred_paths: list[list[str]]):
    """HiClass's precision/recall/f1 (micro and macro) on padded path lists, plain Python."""
    def sets(rows):
        return [set(r) - {""} for r in rows]

    t, p = sets(true_paths), sets(pred_paths)
    inter = [len(a & b) for a, b in zip(t, p)]
    prec = sum(inter) / sum(len(b) for b in p)
    rec = sum(inter) / sum(len(a) for a in t)
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0  # HiClass: ZeroDivisionError
    rows_p = [i / len(b) for i, b in zip(inter, p)]
    rows_r = [i / len(a) for i, a in zip(inter, t)]
    rows_f = [2 * a * b / (a + b) if a + b else 0.0 for a, b in zip(rows_p, rows_r)]
    n = len(t)
    return (prec, rec, f1), (sum(rows_p) / n, sum(rows_r) / n, sum(rows_f) / n)


@SETTINGS
@given(st.data())
def test_hierarchical_prf_matches_hiclass_definitions(tiny_taxonomy, data):
    t = tiny_taxonomy
    leaves = list(t.leaf_ids)
    n = data.draw(st.integers(1, 8))
    true_leaves = data.draw(st.lists(st.sampled_from(leaves), min_size=n, max_size=n))
    pred_leaves = data.draw(st.lists(st.sampled_from(list(t.ids)), min_size=n, max_size=n))
    micro_ref, macro_ref = _hiclass_reference(
        [t.path(x) + [""] * (4 - len(t.path(x))) for x in true_leaves],
        [t.path(x) for x in pred_leaves],
    )
    true = _rows(t, *({x} for x in true_leaves))
    pred = _rows(t, *({x} for x in pred_leaves))
    assert tuple(hierarchical_prf(true, pred, "micro", taxonomy=t)) == pytest.approx(micro_ref)
    assert tuple(hierarchical_prf(true, pred, "macro", taxonomy=t)) == pytest.approx(macro_ref)


# ---------------------------------------------------------------------- AU(PRC)
def test_auprc_by_hand():
    true = np.array([[1, 0], [0, 1]], dtype=bool)
    scores = np.array([[0.9, 0.8], [0.8, 0.1]])
    # sorted: 0.9 (+), 0.8 (-), 0.8 (-) tied, 0.1 (+): steps at 0.9 (P=1, R=.5), 0.8 (P=1/3, R=.5),
    # 0.1 (P=2/4, R=1) -> AP = .5 * 1 + 0 + .5 * .5
    assert auprc_micro(true, scores) == pytest.approx(0.75)
    assert auprc_micro(np.zeros((2, 2), bool), scores) == 0.0


@SETTINGS
@given(
    st.integers(1, 12).flatmap(lambda b: st.integers(1, 9).flatmap(lambda n: st.tuples(
        arrays(bool, (b, n)),
        st.one_of(
            arrays(np.float64, (b, n), elements=st.floats(0, 1)),
            arrays(np.float32, (b, n), elements=st.sampled_from([0.0, 0.25, 0.5, 1.0]).map(np.float32)),
        ),
    )))
)
def test_auprc_matches_sklearn_random_and_tie_heavy(case):
    true, scores = case
    if not true.any():
        assert auprc_micro(true, scores) == 0.0
        return
    expected = average_precision_score(true, scores, average="micro")
    assert auprc_micro(true, scores) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_auprc_closes_labels_with_taxonomy(tiny_taxonomy):
    t = tiny_taxonomy
    rng = np.random.default_rng(3)
    true = _rows(t, {"game_ip_spiderman"}, {"food_bake"}, {"film_live"})
    closed = t.close_ancestors(true)
    scores = rng.random(true.shape)
    expected = average_precision_score(closed, scores, average="micro")
    assert auprc_micro(true, scores, taxonomy=t) == pytest.approx(expected)
    assert auprc_micro(true, scores) != pytest.approx(expected)
    with pytest.raises(ValueError, match="shape"):
        auprc_micro(true, scores[:, :3])
    with pytest.raises(ValueError, match="finite"):
        auprc_micro(true, np.full(true.shape, np.nan))


# ---------------------------------------------------------------------- violations
def test_violations_by_kind(tiny_taxonomy):
    t = tiny_taxonomy
    ok = t.close_ancestors(_rows(t, {"game_ip_wzry", "game_theme_moba"}))[0]
    orphan = _rows(t, {"food_bake"})[0]                                   # no parent 'food'
    clash = t.close_ancestors(_rows(t, {"food_bake", "food_home"}))[0]    # exclusive group
    missing = t.close_ancestors(_rows(t, {"game_ip_wzry"}))[0]            # requires game_theme_moba
    labels = np.stack([ok, orphan, clash, missing])
    v = violations(t, labels)
    assert v["ancestry"].tolist() == [False, True, False, False]
    assert v["exclusive"].tolist() == [False, False, True, False]
    assert v["requires"].tolist() == [False, False, False, True]
    assert violation_rate(t, labels) == 0.75


def test_decoder_output_has_no_violations(tiny_taxonomy):
    rng = np.random.default_rng(0)
    out = Decoder(tiny_taxonomy, thresholds=0.3).decode(rng.random((300, tiny_taxonomy.n_nodes)))
    assert violation_rate(tiny_taxonomy, out.labels) == 0.0


# ---------------------------------------------------------------------- evaluate
def test_evaluate_and_breakdown(tiny_taxonomy):
    t = tiny_taxonomy
    true_leaf = _idx(t, "game_ip_spiderman", "food_bake", "food_home")
    pred_leaf = _idx(t, "game_ip_spiderman", "food_home", "food_home")
    true = _rows(t, {"game_ip_spiderman"}, {"food_bake"}, {"food_home"})
    pred = t.close_ancestors(_rows(t, {"game_ip_spiderman"}, {"food_home"}, {"food_home", "food_bake"}))
    scores = np.random.default_rng(1).random(true.shape)
    res = evaluate(t, true, true_leaf, pred, pred_leaf, scores)
    assert set(res) == {"n", "leaf_acc", "level1_acc", "level2_acc", "level3_acc", "level4_acc",
                        "hp", "hr", "hf1", "hp_macro", "hr_macro", "hf1_macro", "auprc", "violations"}
    assert res["n"] == 3 and res["leaf_acc"] == pytest.approx(2 / 3)
    assert res["level1_acc"] == 1.0 and res["level4_acc"] == 1.0
    assert res["violations"] == pytest.approx(1 / 3)
    # |T∩P| = 4 + 1 + 2, |P| = 4 + 2 + 3, |T| = 4 + 2 + 2
    assert (res["hp"], res["hr"]) == pytest.approx((7 / 9, 7 / 8))
    assert res["auprc"] == pytest.approx(
        average_precision_score(t.close_ancestors(true), scores, average="micro"))
    by = evaluate_by_subtree(t, true, true_leaf, pred, pred_leaf, scores)
    assert list(by) == ["food", "game"]
    assert by["game"]["leaf_acc"] == 1.0 and by["game"]["n"] == 1
    assert by["food"]["leaf_acc"] == 0.5 and by["food"]["violations"] == 0.5
    assert math.isnan(by["food"]["level3_acc"])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: {**a, "true_leaf": np.array([0, 1])}, "rows"),
        (lambda a: {**a, "pred_leaf": np.array([0, 99, 1])}, "outside"),
        (lambda a: {**a, "pred_labels": a["pred_labels"][:, :4]}, "shape"),
        (lambda a: {**a, "true_labels": np.full(a["true_labels"].shape, 0.5)}, "boolean"),
        (lambda a: {k: v[:0] for k, v in a.items()}, "at least one row"),
    ],
)
def test_evaluate_rejects_bad_input(tiny_taxonomy, mutate, message):
    n = tiny_taxonomy.n_nodes
    args = {"true_labels": np.zeros((3, n), bool), "true_leaf": np.array([5, 6, 9]),
            "pred_labels": np.zeros((3, n), bool), "pred_leaf": np.array([5, 6, 9]),
            "scores": np.zeros((3, n))}
    with pytest.raises(ValueError, match=message):
        evaluate(tiny_taxonomy, **mutate(args))
