"""Partial labels (a label at an internal node: "this node, children unknown"): targets, losses that
do not push the unknown children down, and decoding that may stop at an internal node."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.builders import tiny_config, tiny_taxonomy, tmp_root
from vtag.hierarchy.decode import Decoder
from vtag.models.dhmcn import HierarchySpec, create_head, hierarchical_loss
from vtag.models.evaluate import choose_decode
from vtag.models.featurize import Featurizer

# depth 1, 2 and 3 labels in the tiny taxonomy (levels 1..4)
PARTIAL = [["game"], ["game_ip"], ["game_ip_marvel"], ["film_anim"], ["game_ip_ironman"]]


def _targets(labels):
    tax = tiny_taxonomy()
    f = Featurizer(tax, tiny_config(), vocab=[])
    return tax, f.targets(pd.DataFrame({"labels": labels}))


def test_targets_mark_the_descendants_of_a_partial_label_unknown():
    tax, y = _targets(PARTIAL)
    idx = tax.index
    for i, labels in enumerate(PARTIAL):
        node = labels[0]
        for a in tax.path(node):
            assert y[i, idx[a]] == 1
        for d in tax.descendants(node):
            assert y[i, idx[d]] == -1, (node, d)
        others = set(tax.ids) - set(tax.path(node)) - set(tax.descendants(node))
        assert all(y[i, idx[o]] == 0 for o in others)
    assert (y[3] >= 0).all() and (y[4] >= 0).all()  # leaf labels: nothing unknown


@pytest.mark.parametrize("head", ["dhmcn_v3", "dhmcn_v1"])
def test_bce_heads_get_no_gradient_on_unknown_children(head):
    tax, y = _targets(PARTIAL)
    spec = HierarchySpec.from_taxonomy(tax)
    torch.manual_seed(0)
    h = create_head({"name": head, "hidden": 8, "local_hidden": 8}, spec, 6)
    out = h(torch.randn(len(PARTIAL), 6))
    for key in ("global_logits", "local_logits"):
        out[key].retain_grad()
    sum(hierarchical_loss(out, y, h.structure, {"violation": 0.0}).values()).backward()
    unknown = y < 0
    for key in ("global_logits", "local_logits"):
        g = out[key].grad
        assert (g[unknown] == 0).all()
        assert (g[~unknown] != 0).any()


def test_flat_loss_of_a_partial_label_is_the_mass_of_its_leaves():
    tax, y = _targets([["game_ip"]])
    spec = HierarchySpec.from_taxonomy(tax)
    logits = torch.randn(1, int(spec.leaves.size), requires_grad=True)
    out = {"leaf_logits": logits}
    loss = hierarchical_loss(out, y, create_head({"name": "flat"}, spec, 4).structure, {})["leaf"]
    p = torch.softmax(logits, dim=1)[0]
    under = [k for k, j in enumerate(spec.leaves) if tax.ids[j] in tax.descendants("game_ip")]
    assert loss.item() == pytest.approx(-torch.log(p[under].sum()).item(), rel=1e-5)
    loss.backward()
    # moving mass among game_ip's leaves is free: their gradients are equal up to their share
    g = logits.grad[0, under]
    share = p[under] / p[under].sum()
    assert torch.allclose(g / share, (g / share)[0].expand_as(g), atol=1e-5)


def test_decoder_stops_at_an_internal_node_when_children_are_unsure():
    tax = tiny_taxonomy()
    scores = np.zeros((2, tax.n_nodes), np.float32)
    for node, s in {"game": 0.9, "game_ip": 0.8, "game_ip_wzry": 0.3, "game_ip_marvel": 0.25}.items():
        scores[0, tax.index[node]] = s
    for node, s in {"game": 0.95, "game_ip": 0.9, "game_ip_wzry": 0.85}.items():
        scores[1, tax.index[node]] = s
    always = Decoder(tax).decode(scores)
    assert [tax.ids[j] for j in always.leaf] == ["game_ip_wzry", "game_ip_wzry"]
    stop = Decoder(tax, stop_threshold=0.5).decode(scores)
    assert [tax.ids[j] for j in stop.leaf] == ["game_ip", "game_ip_wzry"]
    assert stop.labels[0, tax.index["game_ip"]] and not stop.labels[0, tax.index["game_ip_wzry"]]
    with pytest.raises(ValueError, match="stop_threshold"):
        Decoder(tax, stop_threshold=1.5)


def test_stop_threshold_is_chosen_on_validation_only_when_labels_stop_early():
    tax = tiny_taxonomy()
    prob = np.zeros((2, tax.n_nodes), np.float32)
    for node, s in {"game": 0.9, "game_ip": 0.8, "game_ip_wzry": 0.3, "game_ip_marvel": 0.25}.items():
        prob[:, tax.index[node]] = s
    auto = {"decode": {"stop_threshold": "auto", "primary": "auto"}}
    full = pd.DataFrame({"labels": [["game_ip_wzry"], ["game_ip_wzry"]]})
    assert choose_decode(tax, full, prob, auto) == {"stop_threshold": None, "primary": "path"}
    partial = pd.DataFrame({"labels": [["game_ip"], ["game_ip"]]})
    chosen = choose_decode(tax, partial, prob, auto)
    assert chosen["primary"] == "path"  # both rules reach game_ip: the first is kept
    assert chosen["stop_threshold"] is not None and 0.3 < chosen["stop_threshold"] <= 0.8
    fixed = choose_decode(tax, partial, prob, {"decode": {"stop_threshold": 0.5, "primary": "top_leaf"}})
    assert fixed == {"stop_threshold": 0.5, "primary": "top_leaf"}


def _split_mass_scores(tax):
    """Leaf-softmax masses of one row: ``game`` 0.55 split over ``game_theme``'s two leaves (0.30,
    0.25), ``film`` 0.45 with the single best leaf (``film_live`` 0.35): the path product
    (0.55 · 0.55 · 0.30 against 0.45 · 0.40 · 0.35) and the top leaf disagree."""
    leaves = [tax.ids[j] for j in tax.leaf_indices]
    p = dict.fromkeys(leaves, 0.0)
    p.update(game_theme_rpg=0.30, game_theme_moba=0.25, film_live=0.35, film_anim=0.05, film_ip_spiderman=0.05)
    leaf_p = np.array([[p[x] for x in leaves]])
    eye = np.zeros((len(leaves), tax.n_nodes), bool)
    eye[np.arange(len(leaves)), tax.leaf_indices] = True
    return (leaf_p @ tax.close_ancestors(eye)).astype(np.float32)


def test_top_leaf_primary_follows_the_best_leaf_not_the_path_product():
    tax = tiny_taxonomy()
    scores = _split_mass_scores(tax)
    path = Decoder(tax).decode(scores)
    top = Decoder(tax, primary="top_leaf").decode(scores)
    assert tax.ids[top.leaf[0]] == "film_live"
    assert tax.ids[path.leaf[0]] == "game_theme_rpg"
    # the top leaf's path log score is the sum of its consistent scores' logs
    want = sum(np.log(scores[0, tax.index[a]]) for a in tax.path("film_live"))
    assert top.path_logscore[0] == pytest.approx(want, rel=1e-5)
    # the stop threshold walks the top leaf up as it walks the path's leaf
    assert tax.ids[Decoder(tax, primary="top_leaf", stop_threshold=0.42).decode(scores).leaf[0]] == "film"
    assert tax.ids[Decoder(tax, stop_threshold=0.42).decode(scores).leaf[0]] == "game_theme"
    with pytest.raises(ValueError, match="primary"):
        Decoder(tax, primary="mass")


def test_primary_rule_is_chosen_on_validation_when_it_does_better():
    tax = tiny_taxonomy()
    scores = np.repeat(_split_mass_scores(tax), 4, axis=0)
    film = pd.DataFrame({"labels": [["film"]] * 4})
    chosen = choose_decode(tax, film, scores, {"decode": {"stop_threshold": "auto", "primary": "auto"}})
    assert chosen["primary"] == "top_leaf" and chosen["stop_threshold"] > 0.45
    assert choose_decode(tax, film, scores, {"decode": {"stop_threshold": "auto"}})["primary"] == "path"


def test_config_refuses_an_unknown_primary_rule():
    from vtag.models.model_config import resolve_config

    with pytest.raises(ValueError, match="decode.primary"):
        resolve_config({**tiny_config(), "decode": {"primary": "mass"}})


def test_training_on_labels_at_depths_1_2_3_runs_and_records_the_stop_threshold():
    from vtag.models.data import toy_labeled_frame
    from vtag.models.training import train

    tax = tiny_taxonomy()
    frame = toy_labeled_frame(tax, n=60, seed=1)
    # cut every second row's label to its parent (depth 1-3): children unknown
    frame["labels"] = [[tax.path(x[0])[-2]] if i % 2 and len(tax.path(x[0])) > 1 else list(x)
                       for i, x in enumerate(frame["labels"])]
    cfg = tiny_config(epochs=2, val_fraction=0.3)
    cfg["decode"]["stop_threshold"] = "auto"
    cfg["decode"]["primary"] = "auto"
    res = train(cfg, tax, frame, tmp_root() / "b", seed=0, progress=False)
    assert "stop_threshold" in res.metrics and res.metrics["decode_primary"] in ("path", "top_leaf")
    from vtag.models.predictor import Predictor

    pred = Predictor.load(res.bundle_dir, device="cpu")
    thr = pred.config["decode"]["stop_threshold"]
    assert pred.config["decode"]["primary"] == res.metrics["decode_primary"]
    assert pred.decoder.primary == res.metrics["decode_primary"]
    from vtag.models.evaluate import primary_label_nodes

    assert pred.config["decode"]["label_nodes"] == primary_label_nodes(tax, frame)
    allowed = {tax.index[i] for i in pred.config["decode"]["label_nodes"]}
    assert set(pred.decoder.label_nodes.tolist()) == allowed
    decoded = pred.decoder.decode(pred.predict_proba(frame.drop(columns=["labels"]))[0])
    assert set(decoded.leaf.tolist()) <= allowed | {j for j in decoded.leaf.tolist() if not any(
        a in allowed for a in (tax.index[x] for x in tax.path(tax.ids[j])))}
    assert thr is None or 0 < thr < 1
    assert len(pred.predict(frame.drop(columns=["labels"]))) == len(frame)


def test_svm_classes_are_the_label_nodes_and_a_leaf_takes_its_deepest_class():
    from vtag.models.training.post import svm_output_classes

    tax = tiny_taxonomy()
    nodes = np.array([tax.index[n] for n in ("game", "game_ip_marvel", "food_bake", "game")] + [-1])
    out = svm_output_classes(tax, nodes)
    leaves = [tax.nodes[j].id for j in tax.leaf_indices]
    want = {"game_ip_spiderman": "game_ip_marvel", "game_ip_ironman": "game_ip_marvel", "food_bake": "food_bake",
            "game_theme_rpg": "game", "game_theme_moba": "game", "game_ip_wzry": "game"}
    got = {leaf: (tax.nodes[c].id if c >= 0 else None) for leaf, c in zip(leaves, out)}
    assert got == {leaf: want.get(leaf) for leaf in leaves}  # film_* and food_home: below no class


def test_the_tfidf_svm_learns_labels_that_stop_at_internal_nodes():
    """Every label cut to level 1: the SVM has a class per level-1 node (none were left out), and
    every leaf below one takes that class's margin."""
    from vtag.models.data import toy_labeled_frame
    from vtag.models.factory import create_model
    from vtag.models.training.post import fit_svm_wide

    tax = tiny_taxonomy()
    frame = toy_labeled_frame(tax, n=90, seed=2)
    frame["labels"] = [[tax.path(x[0])[0]] for x in frame["labels"]]
    cfg = tiny_config(epochs=1)
    cfg["modalities"] = ["text"]
    cfg["text"]["bow"].update({"min_count": 1})
    cfg["head"] = {"name": "flat", "hidden": 32, "tfidf_wide": "mix"}
    from vtag.models.model_config import resolve_config

    cfg = resolve_config(cfg)
    feat = Featurizer.fit(tax, cfg, frame)
    model = create_model(cfg, tax, feat)
    info = fit_svm_wide(model, feat, tax, frame.iloc[:70], frame.iloc[70:], seed=0)
    assert info["classes"] == len({x[0] for x in frame["labels"].iloc[:70]}) >= 2
    weight = model.tfidf_wide.table.weight.detach().numpy()
    leaves = [tax.nodes[j].id for j in tax.leaf_indices]
    for root in ("game", "film", "food"):
        cols = [k for k, leaf in enumerate(leaves) if tax.path(leaf)[0] == root]
        assert np.abs(weight[:, cols]).sum() > 0
        np.testing.assert_array_equal(weight[:, cols], weight[:, cols[:1]].repeat(len(cols), axis=1))


def test_label_nodes_end_a_coarsely_labeled_branch_at_its_label_and_others_at_a_leaf():
    tax = tiny_taxonomy()
    scores = np.zeros((2, tax.n_nodes), np.float32)
    for node, s in {"food": 0.9, "food_bake": 0.85}.items():  # row 0: sure of a food leaf
        scores[0, tax.index[node]] = s
    for node, s in {"game": 0.9, "game_theme": 0.5, "game_theme_rpg": 0.3}.items():  # row 1: unsure game leaf
        scores[1, tax.index[node]] = s
    # food is only ever labeled "food"; game is labeled to its leaves
    labels = [tax.index[n] for n in ("food", "game_theme_rpg", "game_theme_moba", "game_ip_wzry")]
    dec = Decoder(tax, label_nodes=labels).decode(scores)
    assert [tax.ids[j] for j in dec.leaf] == ["food", "game_theme_rpg"]
    primary_only = Decoder(tax, label_nodes=labels, max_candidates=0).decode(scores)
    assert primary_only.labels[0, tax.index["food"]] and not primary_only.labels[0, tax.index["food_bake"]]
    # the stop threshold walks only between label nodes: game_theme is none, game neither: the leaf stays
    assert [tax.ids[j] for j in Decoder(tax, label_nodes=labels, stop_threshold=0.6).decode(scores).leaf] == \
        ["food", "game_theme_rpg"]
    with_game = labels + [tax.index["game"]]
    assert tax.ids[Decoder(tax, label_nodes=with_game, stop_threshold=0.6).decode(scores).leaf[1]] == "game"
    # a leaf with no label node above it is kept
    only_food = Decoder(tax, label_nodes=[tax.index["food"]]).decode(scores)
    assert tax.ids[only_food.leaf[1]] == "game_theme_rpg"
    with pytest.raises(ValueError, match="label_nodes"):
        Decoder(tax, label_nodes=[tax.n_nodes])


def test_primary_label_nodes_are_recorded_only_when_some_label_is_internal():
    from vtag.models.evaluate import primary_label_nodes

    tax = tiny_taxonomy()
    assert primary_label_nodes(tax, pd.DataFrame({"labels": [["food_bake"], ["game_ip_wzry"]]})) is None
    nodes = primary_label_nodes(tax, pd.DataFrame({"labels": [["food_bake", "game"], ["game"], ["nope"], []]}))
    assert nodes == ["game", "food_bake"]  # taxonomy order; extra labels and unknown ids ignored
