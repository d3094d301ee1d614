"""vtag.hierarchy.decode: consistent scores, the primary path, constrained extra labels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vtag.hierarchy.decode import Decoder, make_consistent
from vtag.hierarchy.taxonomy import Taxonomy, TaxonomyError

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------- strategies
@st.composite
def taxonomies(draw, max_depth: int = 5) -> Taxonomy:
    """A random valid taxonomy: a tree of depth 2..max_depth, leaves at mixed levels, exclusive
    groups among nodes that are not ancestor-related and ``requires`` rules, each kept only when
    the validator accepts it (so closures never clash)."""
    depth = draw(st.integers(2, max_depth))
    nodes: list[dict] = []

    def grow(parent: str | None, level: int) -> None:
        nid = f"n{len(nodes)}"
        nodes.append({"id": nid, "name": f"名{len(nodes)}", "parent": parent})
        if level < depth:
            lo = 1 if level == 1 else 0  # level-1 nodes always have children: depth >= 2
            for _ in range(draw(st.integers(lo, 3))):
                grow(nid, level + 1)

    for _ in range(draw(st.integers(1, 3))):
        grow(None, 1)
    ids = [n["id"] for n in nodes]
    data = {"label": "random", "nodes": nodes, "constraints": {"exclusive": [], "requires": {}}}
    tax = Taxonomy.from_dict(data)
    for _ in range(draw(st.integers(0, 4))):
        group = draw(st.lists(st.sampled_from(ids), min_size=2, max_size=3, unique=True))
        trial = {**data["constraints"], "exclusive": data["constraints"]["exclusive"] + [group]}
        tax = _try(data, trial) or tax
    for _ in range(draw(st.integers(0, 4))):
        a, b = draw(st.lists(st.sampled_from(ids), min_size=2, max_size=2, unique=True))
        trial = {**data["constraints"], "requires": {**data["constraints"]["requires"], a: [b]}}
        tax = _try(data, trial) or tax
    return tax


def _try(data: dict, constraints: dict) -> Taxonomy | None:
    """Accept ``constraints`` into ``data`` if the result validates."""
    try:
        tax = Taxonomy.from_dict({**data, "constraints": constraints})
    except TaxonomyError:
        return None
    data["constraints"] = constraints
    return tax


def score_matrices(tax: Taxonomy, max_rows: int = 6):
    """Random ``[B, N]`` float32 scores in [0, 1]: continuous, or a few values (many ties)."""
    continuous = st.floats(0.0, 1.0, allow_nan=False, width=32)
    coarse = st.sampled_from([0.0, 0.1, 0.4, 0.5, 0.6, 0.9, 1.0]).map(np.float32)
    return st.tuples(st.integers(1, max_rows), st.sampled_from([continuous, coarse])).flatmap(
        lambda spec: arrays(np.float32, (spec[0], tax.n_nodes), elements=spec[1])
    )


@st.composite
def taxonomy_and_scores(draw):
    tax = draw(taxonomies())
    return tax, draw(score_matrices(tax))


# ---------------------------------------------------------------------- brute-force references
def brute_consistent(tax: Taxonomy, scores: np.ndarray) -> np.ndarray:
    """Each node's score = the max over its subtree (itself included)."""
    r = tax.ancestor_matrix()  # r[i, j]: j is i or a descendant of i
    return np.where(r[None], scores[:, None, :], -np.inf).max(axis=2).astype(np.float32)


def brute_path_scores(tax: Taxonomy, cons_row: np.ndarray) -> dict[int, float]:
    """leaf index -> sum of log consistent scores along its path (float64)."""
    logs = np.log(np.maximum(cons_row.astype(np.float64), 1e-30))
    paths = tax.path_matrix[tax.leaf_indices]  # [leaves, depth], -1 padded
    sums = np.where(paths >= 0, logs[paths], 0.0).sum(axis=1)
    return dict(zip(tax.leaf_indices.tolist(), sums.tolist()))


def greedy_reference(tax: Taxonomy, cons_row: np.ndarray, leaf: int, thresholds: np.ndarray,
                     max_candidates: int) -> np.ndarray:
    """The documented policy, one row, plain Python."""
    closure, excl = tax.closure_matrix, tax.exclusive_matrix
    labels = closure[leaf].copy()
    thr = np.asarray(thresholds, dtype=np.float32)  # compared in float32, like the scores
    cands = [i for i in range(tax.n_nodes) if cons_row[i] >= thr[tax.levels[i] - 1] and not labels[i]]
    cands.sort(key=lambda i: (-cons_row[i], i))
    for c in cands[:max_candidates]:
        forbidden = excl[labels].any(axis=0)
        if not (closure[c] & forbidden).any():
            labels |= closure[c]
    return labels


def assert_respects_constraints(tax: Taxonomy, labels: np.ndarray) -> None:
    assert (tax.close_ancestors(labels) == labels).all(), "not closed under ancestors"
    for a, bs in tax.constraints.requires.items():
        for b in bs:
            assert not (labels[:, tax.index[a]] & ~labels[:, tax.index[b]]).any(), f"{a} requires {b}"
    for group in tax.constraints.exclusive:
        idx = [tax.index[g] for g in group]
        assert (labels[:, idx].sum(axis=1) <= 1).all(), f"exclusive {group} broken"


# ---------------------------------------------------------------------- properties
@SETTINGS
@given(taxonomy_and_scores())
def test_make_consistent_is_the_subtree_max(case):
    tax, scores = case
    cons = make_consistent(scores, tax)
    assert cons.dtype == np.float32 and cons.shape == scores.shape
    assert (cons >= scores).all()
    child = np.flatnonzero(tax.parent_index >= 0)
    assert (cons[:, tax.parent_index[child]] >= cons[:, child]).all()
    np.testing.assert_array_equal(cons, brute_consistent(tax, scores))


@SETTINGS
@given(taxonomy_and_scores(), st.sampled_from([0.3, 0.5, 0.8, {1: 0.9, 2: 0.2}, {3: 0.0}]))
def test_decode_matches_brute_force_and_greedy_reference(case, thresholds):
    tax, scores = case
    if isinstance(thresholds, dict):
        thresholds = {k: v for k, v in thresholds.items() if k <= tax.max_depth}
    dec = Decoder(tax, thresholds=thresholds, max_candidates=10_000)
    out = dec.decode(scores)
    np.testing.assert_array_equal(out.consistent, brute_consistent(tax, scores))
    assert_respects_constraints(tax, out.labels)
    for i in range(len(scores)):
        assert tax.is_leaf[out.leaf[i]]
        paths = brute_path_scores(tax, out.consistent[i])
        best = max(paths.values())
        # the primary path is the best-scoring consistent path (float32 sums: small tolerance)
        assert paths[int(out.leaf[i])] >= best - 1e-3 * max(1.0, abs(best))
        assert out.path_logscore[i] == pytest.approx(paths[int(out.leaf[i])], rel=1e-4, abs=1e-3)
        assert out.leaf_score[i] == out.consistent[i, out.leaf[i]]
        expected = greedy_reference(tax, out.consistent[i], int(out.leaf[i]), dec.thresholds, 10_000)
        np.testing.assert_array_equal(out.labels[i], expected)


@SETTINGS
@given(taxonomy_and_scores(), st.integers(0, 3))
def test_decode_with_few_candidates_still_respects_constraints(case, k):
    tax, scores = case
    out = Decoder(tax, thresholds=0.2, max_candidates=k).decode(scores)
    assert_respects_constraints(tax, out.labels)
    for i in range(len(scores)):
        primary = tax.closure_matrix[out.leaf[i]]
        assert (out.labels[i] >= primary).all()
        extras = out.labels[i] & ~primary
        # every extra label is implied by a node that passed the threshold
        implied = tax.closure_matrix[out.consistent[i] >= 0.2].any(axis=0)
        assert (implied >= extras).all()
        if k == 0:
            assert not extras.any()
        expected = greedy_reference(tax, out.consistent[i], int(out.leaf[i]), np.full(5, 0.2), k)
        if (out.consistent[i] >= 0.2).sum() <= k:  # exact when no tie at the cut can matter
            np.testing.assert_array_equal(out.labels[i], expected)


# ---------------------------------------------------------------------- hand-made cases
def _scores(tax: Taxonomy, values: dict[str, float], base: float = 0.0) -> np.ndarray:
    s = np.full((1, tax.n_nodes), base, dtype=np.float32)
    for k, v in values.items():
        s[0, tax.index[k]] = v
    return s


def _ids(tax: Taxonomy, row: np.ndarray) -> set[str]:
    return {tax.ids[j] for j in np.flatnonzero(row)}


def test_requires_and_exclusive_on_tiny(tiny_taxonomy):
    t = tiny_taxonomy
    s = _scores(t, {"film_ip_spiderman": 0.9, "film_anim": 0.8, "food_bake": 0.7, "food_home": 0.6,
                    "game_theme_rpg": 0.3})
    out = Decoder(t, thresholds=0.5).decode(s)
    assert out.path_ids(0) == ["film", "film_ip", "film_ip_marvel", "film_ip_spiderman"]
    assert out.path_names(0) == ["电影", "系列IP", "漫威", "蜘蛛侠"]
    # spiderman requires film_live, which excludes film_anim; food_bake wins over food_home
    assert _ids(t, out.labels[0]) == {
        "film", "film_ip", "film_ip_marvel", "film_ip_spiderman", "film_form", "film_live",
        "food", "food_bake"}
    tags = out.tags(0)
    assert [(g["node_id"], g["level"]) for g in tags][:3] == [("film", 1), ("food", 1), ("film_ip", 2)]
    assert tags[0]["name"] == "电影" and tags[0]["score"] == pytest.approx(0.9)
    levels = [g["level"] for g in tags]
    assert levels == sorted(levels)


def test_threshold_equal_to_a_float32_score_passes(tiny_taxonomy):
    t = tiny_taxonomy
    s = _scores(t, {"game_theme_rpg": 0.95, "food_home": 0.9})  # float32(0.9) < float64 0.9
    assert "food_home" in _ids(t, Decoder(t, thresholds=0.9).decode(s).labels[0])


def test_per_level_thresholds(tiny_taxonomy):
    t = tiny_taxonomy
    s = _scores(t, {"game_theme_rpg": 0.9, "food_home": 0.55, "film": 0.55})
    assert _ids(t, Decoder(t, thresholds={1: 0.6, 2: 0.5}).decode(s).labels[0]) == {
        "game", "game_theme", "game_theme_rpg", "food", "food_home"}
    assert _ids(t, Decoder(t, thresholds={2: 0.6}).decode(s).labels[0]) == {
        "game", "game_theme", "game_theme_rpg", "film", "food"}


def test_shallow_leaf_beats_deep_path_of_equal_leaf_score(tiny_taxonomy):
    t = tiny_taxonomy
    # food_bake (level 2) and game_ip_spiderman (level 4) both 0.8: the path product prefers food
    s = _scores(t, {"food_bake": 0.8, "game_ip_spiderman": 0.8}, base=0.01)
    out = Decoder(t).decode(s)
    assert t.ids[out.leaf[0]] == "food_bake"
    assert out.path_logscore[0] == pytest.approx(2 * np.log(0.8), rel=1e-5)


def test_empty_batch_and_chunking_agree(tiny_taxonomy):
    t = tiny_taxonomy
    out = Decoder(t).decode(np.zeros((0, t.n_nodes)))
    assert out.labels.shape == (0, t.n_nodes) and out.leaf.shape == (0,)
    rng = np.random.default_rng(1)
    s = rng.random((700, t.n_nodes))
    whole = Decoder(t).decode(s)
    parts = [Decoder(t).decode(s[i : i + 97]) for i in range(0, 700, 97)]
    np.testing.assert_array_equal(whole.labels, np.concatenate([p.labels for p in parts]))
    np.testing.assert_array_equal(whole.leaf, np.concatenate([p.leaf for p in parts]))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 3)), "shape"),
        (np.zeros(19), "shape"),
        (np.full((1, 19), 1.5), "[0, 1]"),
        (np.full((1, 19), -0.1), "[0, 1]"),
        (np.full((1, 19), np.nan), "[0, 1]"),
        (np.array([["a"] * 19]), "real numbers"),
    ],
)
def test_bad_scores_are_rejected(tiny_taxonomy, bad, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Decoder(tiny_taxonomy).decode(bad)


def test_bad_scores_message_names_row_and_node(tiny_taxonomy):
    s = np.zeros((3, tiny_taxonomy.n_nodes))
    s[2, tiny_taxonomy.index["food_bake"]] = 2.0
    with pytest.raises(ValueError, match="row 2, node 'food_bake'"):
        Decoder(tiny_taxonomy).decode(s)
    with pytest.raises(ValueError, match="NaN"):
        make_consistent(np.full((1, tiny_taxonomy.n_nodes), np.nan), tiny_taxonomy)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"thresholds": {7: 0.5}}, "levels 1..4"),
        ({"thresholds": {"x": 0.5}}, "integers"),
        ({"thresholds": -0.1}, ">= 0"),
        ({"thresholds": float("nan")}, ">= 0"),
        ({"thresholds": {2: "high"}}, "level 2"),
        ({"max_candidates": -1}, "non-negative"),
        ({"max_candidates": True}, "non-negative"),
    ],
)
def test_bad_decoder_settings(tiny_taxonomy, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Decoder(tiny_taxonomy, **kwargs)


def test_ties_go_to_the_lowest_node_index(tiny_taxonomy):
    t = tiny_taxonomy
    # every path scores log(1) = 0: the first leaf in node order (level, then id) wins
    out = Decoder(t).decode(np.ones((1, t.n_nodes)))
    assert t.ids[out.leaf[0]] == "food_bake"
    out = Decoder(t).decode(_scores(t, {"film_live": 0.7, "film_anim": 0.7}))
    assert t.ids[out.leaf[0]] == "film_anim"
    # and an exclusive tie between extras: the lower index is tried first and blocks the other
    out = Decoder(t).decode(_scores(t, {"game_theme_rpg": 0.9, "food_home": 0.6, "food_bake": 0.6}))
    assert _ids(t, out.labels[0]) == {"game", "game_theme", "game_theme_rpg", "food", "food_bake"}
