"""Hierarchical heads on plain feature vectors: structure, shapes, cascade, max-constraint, loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vtag.models.dhmcn import (
    HEADS,
    DHMCNHead,
    HierarchySpec,
    cascade_weight,
    create_head,
    hierarchical_loss,
    max_constraint,
)


def dag_R() -> np.ndarray:
    """0, 1 top; 2 under 0 and 1; 3 under 2; 4 under 1. R[i, j]: j is i or below i."""
    R = np.eye(5, dtype=bool)
    for anc, desc in [(0, 2), (0, 3), (1, 2), (1, 3), (1, 4), (2, 3)]:
        R[anc, desc] = True
    return R


@pytest.fixture(scope="module")
def spec(tiny_taxonomy) -> HierarchySpec:
    return HierarchySpec.from_taxonomy(tiny_taxonomy)


def test_spec_constructors_agree(tiny_taxonomy, spec):
    from_r = HierarchySpec.from_ancestor_matrix(tiny_taxonomy.ancestor_matrix())
    from_p = HierarchySpec.from_parents(tiny_taxonomy.parent_index)
    for other in (from_r, from_p):
        assert (other.R == spec.R).all()
        assert (other.level == spec.level).all()
        assert {tuple(e) for e in other.edges} == {tuple(e) for e in spec.edges}
    assert spec.n_levels == tiny_taxonomy.max_depth
    assert (spec.leaves == tiny_taxonomy.leaf_indices).all()


def test_dag_spec():
    s = HierarchySpec.from_ancestor_matrix(dag_R())
    assert s.level.tolist() == [1, 1, 2, 3, 2]
    assert {tuple(e) for e in s.edges} == {(0, 2), (1, 2), (2, 3), (1, 4)}
    assert s.leaves.tolist() == [3, 4]
    # explicit levels: 4 may sit at level 3 (an edge may skip a level)
    s2 = HierarchySpec.from_ancestor_matrix(dag_R(), level_indices=[[0, 1], [2], [3, 4]])
    assert s2.level.tolist() == [1, 1, 2, 3, 3] and s2.n_levels == 3
    with pytest.raises(ValueError, match="deeper"):
        HierarchySpec.from_ancestor_matrix(dag_R(), level_indices=[[0, 1, 3], [2], [4]])
    bad = dag_R()
    bad[3, 0] = True  # 0 below 3 and 3 below 0
    with pytest.raises(ValueError, match="cycle"):
        HierarchySpec.from_ancestor_matrix(bad)
    not_closed = np.eye(3, dtype=bool)
    not_closed[0, 1] = not_closed[1, 2] = True
    with pytest.raises(ValueError, match="transitively"):
        HierarchySpec.from_ancestor_matrix(not_closed)


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("mc", [False, True])
@pytest.mark.parametrize("batch", [1, 4])
def test_heads_shapes_range_and_grads(spec, name, mc, batch):
    torch.manual_seed(0)
    head = create_head({"name": name, "hidden": 8, "local_hidden": 4, "dropout": 0.0, "max_constraint": mc}, spec, 6)
    x = torch.randn(batch, 6)
    out = head(x)
    p = out["prob"]
    assert p.shape == (batch, spec.n_nodes)
    assert torch.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    y = (torch.rand(batch, spec.n_nodes) > 0.5).float()
    y = torch.as_tensor((y.numpy() @ spec.R.T.astype(np.float32)) > 0, dtype=torch.float32)  # ancestor-closed
    loss = head.loss(out, y)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in head.parameters())


@pytest.mark.parametrize("name", sorted(HEADS))
def test_heads_on_a_dag(name):
    spec = HierarchySpec.from_ancestor_matrix(dag_R())
    head = create_head({"name": name, "hidden": 8, "local_hidden": 4, "max_constraint": name != "flat"}, spec, 3)
    out = head(torch.randn(2, 3))
    assert out["prob"].shape == (2, 5)
    head.loss(out, torch.tensor([[1, 1, 1, 1, 0], [0, 1, 0, 0, 1]], dtype=torch.float32)).backward()
    if name != "flat":
        p = out["prob"]
        for a, b in spec.edges:
            assert (p[:, a] >= p[:, b]).all()


def test_flat_parent_is_sum_of_children(spec, tiny_taxonomy):
    head = create_head({"name": "flat", "hidden": 0}, spec, 5)
    p = head(torch.randn(3, 5))["prob"].detach()
    top = tiny_taxonomy.level_indices(1)
    assert torch.allclose(p[:, top].sum(1), torch.ones(3), atol=1e-5)
    for i, node in enumerate(tiny_taxonomy.nodes):
        if node.children:
            kids = [tiny_taxonomy.index[c] for c in node.children]
            assert torch.allclose(p[:, i], p[:, kids].sum(1), atol=1e-5)


def test_cascade_zeroes_descendants_of_a_zero_top_node(spec, tiny_taxonomy):
    torch.manual_seed(1)
    p = torch.rand(2, spec.n_nodes)
    game = tiny_taxonomy.index["game"]
    p[:, game] = 0.0
    out = cascade_weight(p, spec)
    below = [tiny_taxonomy.index[d] for d in tiny_taxonomy.descendants("game")]
    assert (out[:, below] == 0).all()
    film = tiny_taxonomy.index["film"]
    for d in tiny_taxonomy.descendants("film"):
        j = tiny_taxonomy.index[d]
        assert torch.allclose(out[:, j], p[:, j] * p[:, film])
    top = tiny_taxonomy.level_indices(1)
    assert torch.equal(out[:, top], p[:, top])


def test_v3_head_cascade_inside_the_head(spec, tiny_taxonomy):
    """Force the level-1 'game' output to 0 in both the local and the global path: v3 zeroes every
    descendant's confidence, v2 (no cascade) does not."""
    game = tiny_taxonomy.index["game"]
    level1_pos = int(np.flatnonzero(tiny_taxonomy.level_indices(1) == game)[0])
    below = [tiny_taxonomy.index[d] for d in tiny_taxonomy.descendants("game")]
    for cascade in (True, False):
        torch.manual_seed(0)
        head = DHMCNHead(spec, 6, hidden=8, local_hidden=4, dropout=0.0, cascade=cascade).eval()
        with torch.no_grad():
            last = head.local[0][-1]
            last.weight[level1_pos].zero_()
            last.bias[level1_pos] = -1e4
            head.global_out.weight[game].zero_()
            head.global_out.bias[game] = -1e4
        p = head(torch.randn(3, 6))["prob"]
        assert (p[:, game] == 0).all()
        assert (p[:, below] == 0).all() == cascade


def test_max_constraint_matches_dense_definition(spec):
    torch.manual_seed(2)
    for s in (spec, HierarchySpec.from_ancestor_matrix(dag_R())):
        p = torch.rand(4, s.n_nodes)
        R = torch.as_tensor(s.R, dtype=torch.float32)
        dense = (R.unsqueeze(0) * p.unsqueeze(1)).amax(dim=2)  # C-HMCNN get_constr_out
        assert torch.allclose(max_constraint(p, s), dense)


def test_violation_penalty_and_mcloss(spec, tiny_taxonomy):
    from vtag.models.dhmcn import _Structure

    st = _Structure(spec)
    y = torch.zeros(1, spec.n_nodes)
    consistent = torch.full((1, spec.n_nodes), 0.3)
    w = {"global": 0, "local": 0, "fused": 0, "violation": 1.0}
    assert hierarchical_loss({"fused": consistent}, y, st, w)["violation"] == 0
    bad = consistent.clone()
    bad[0, tiny_taxonomy.index["food_bake"]] = 0.9  # child above its parent 'food' by 0.6
    v = hierarchical_loss({"fused": bad}, y, st, w)["violation"]
    assert torch.isclose(v, torch.tensor(0.36 / len(spec.edges)))
    # MCLoss: positive nodes take the max over positive descendants only
    y = torch.zeros(1, spec.n_nodes)
    for n in ("food", "food_home"):
        y[0, tiny_taxonomy.index[n]] = 1
    terms = hierarchical_loss({"fused": bad}, y, st, {"fused": 1.0, "violation": 0}, max_constraint=True)
    mc_pos = st.max_constraint(y * bad)
    mc_neg = st.max_constraint(bad)
    expect = torch.nn.functional.binary_cross_entropy(y * mc_pos + (1 - y) * mc_neg, y)
    assert torch.isclose(terms["fused"], expect)


def test_flat_loss_uses_leaf_mass(spec, tiny_taxonomy):
    head = create_head({"name": "flat", "hidden": 0}, spec, 4)
    out = head(torch.randn(2, 4))
    y = torch.zeros(2, spec.n_nodes)
    y[0, tiny_taxonomy.index["food_bake"]] = 1
    y[1, tiny_taxonomy.index["food"]] = 1  # no leaf: ignored
    terms = head.loss_terms(out, y)
    logp = torch.log_softmax(out["leaf_logits"], 1)
    leaf_pos = int(np.flatnonzero(tiny_taxonomy.leaf_indices == tiny_taxonomy.index["food_bake"])[0])
    assert torch.isclose(terms["leaf"], -logp[0, leaf_pos])


def test_flat_loss_label_smoothing(spec, tiny_taxonomy):
    """leaf_smoothing eps: (1 - eps) of the target on the true leaf, eps spread over all leaves."""
    eps = 0.2
    head = create_head({"name": "flat", "hidden": 0}, spec, 4, loss_weights={"leaf_smoothing": eps})
    out = head(torch.randn(1, 4))
    y = torch.zeros(1, spec.n_nodes)
    y[0, tiny_taxonomy.index["food_bake"]] = 1
    logp = torch.log_softmax(out["leaf_logits"], 1)[0]
    leaf_pos = int(np.flatnonzero(tiny_taxonomy.leaf_indices == tiny_taxonomy.index["food_bake"])[0])
    expect = -(1 - eps) * logp[leaf_pos] - eps * logp.mean()
    assert torch.isclose(head.loss_terms(out, y)["leaf"], expect)
    plain = create_head({"name": "flat", "hidden": 0}, spec, 4)
    plain.load_state_dict(head.state_dict())
    assert not torch.isclose(plain.loss_terms(out, y)["leaf"], expect)


@pytest.mark.parametrize("name", ["flat", "dhmcn_v3"])
def test_wide_path_starts_at_zero_and_learns(spec, name):
    torch.manual_seed(0)
    head = create_head({"name": name, "hidden": 8, "local_hidden": 4, "dropout": 0.0}, spec, 5, wide_dim=3).eval()
    x, w = torch.randn(4, 5), torch.randn(4, 3)
    assert torch.allclose(head(x, w)["prob"], head(x)["prob"])  # zero at start: no change
    y = torch.zeros(4, spec.n_nodes)
    y[:, int(spec.leaves[0])] = 1.0
    y = (torch.as_tensor(spec.R, dtype=torch.float32) @ y.T).T.clamp(max=1.0)
    head.loss(head(x, w), y).backward()
    assert head.wide.weight.grad.abs().sum() > 0
