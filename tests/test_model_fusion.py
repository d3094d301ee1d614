"""Fusions: shapes, LMF against a hand computation, CentralNet outputs, the missing-modality gate."""

from __future__ import annotations

import pytest
import torch

from vtag.models.fusion import FUSIONS, LowRankFusion, MissingModalityGate, create_fusion

DIMS = {"text": 5, "image": 4, "context": 3}


@pytest.mark.parametrize("name", sorted(FUSIONS))
@pytest.mark.parametrize("dims", [DIMS, {"text": 5}])
@pytest.mark.parametrize("batch", [1, 3])
def test_fusion_shapes_and_grads(name, dims, batch):
    torch.manual_seed(0)
    f = create_fusion(dims, {"name": name, "dim": 6, "rank": 3, "layers": 2, "dropout": 0.0})
    out = f({m: torch.randn(batch, d) for m, d in dims.items()})
    assert out["h"].shape == (batch, 6) and torch.isfinite(out["h"]).all()
    loss = out["h"].pow(2).sum()
    if name == "centralnet":
        assert set(out["modality_h"]) == set(dims)
        assert all(h.shape == (batch, 6) for h in out["modality_h"].values())
        loss = loss + sum(h.sum() for h in out["modality_h"].values())
    loss.backward()
    assert all(p.grad is not None for p in f.parameters())


def test_lmf_rank1_matches_hand_computation():
    f = LowRankFusion({"a": 2, "b": 1}, {"rank": 1, "dim": 1, "dropout": 0.0}).eval()
    with torch.no_grad():
        f.factors["a"].copy_(torch.tensor([[[1.0], [2.0], [3.0]]]))  # [r=1, d_a+1=3, out=1]
        f.factors["b"].copy_(torch.tensor([[[4.0], [5.0]]]))  # [1, 2, 1]
        f.rank_weights.fill_(2.0)
        f.bias.fill_(0.5)
    xa, xb = torch.tensor([[1.0, -1.0], [0.5, 2.0]]), torch.tensor([[2.0], [-1.0]])
    h = f({"a": xa, "b": xb})["h"]
    expect = []
    for (a1, a2), (b1,) in zip(xa.tolist(), xb.tolist()):
        fa = a1 * 1 + a2 * 2 + 1 * 3  # [x, 1] . W_a
        fb = b1 * 4 + 1 * 5
        expect.append([2.0 * fa * fb + 0.5])
    assert torch.allclose(h, torch.tensor(expect))


def test_lmf_equals_tensor_fusion_with_the_reconstructed_weight():
    """LMF is tensor fusion with W = Σ_r w_r ⊗_m W_m[r]: check against the explicit outer product."""
    torch.manual_seed(3)
    f = LowRankFusion({"a": 2, "b": 3}, {"rank": 2, "dim": 4, "dropout": 0.0}).eval()
    xa, xb = torch.randn(5, 2), torch.randn(5, 3)
    za = torch.cat([xa, torch.ones(5, 1)], 1)
    zb = torch.cat([xb, torch.ones(5, 1)], 1)
    z = torch.einsum("bi,bj->bij", za, zb)  # [B, 3, 4]
    W = torch.einsum("r,rio,rjo->ijo", f.rank_weights[0], f.factors["a"], f.factors["b"])
    expect = torch.einsum("bij,ijo->bo", z, W) + f.bias
    assert torch.allclose(f({"a": xa, "b": xb})["h"], expect, atol=1e-5)


def test_missing_modality_gate():
    g = MissingModalityGate(3)
    with torch.no_grad():
        g.placeholder.copy_(torch.tensor([7.0, 8.0, 9.0]))
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = g(x, torch.tensor([True, False]))
    assert out.tolist() == [[1.0, 2.0, 3.0, 1.0], [7.0, 8.0, 9.0, 0.0]]
    g(x, torch.tensor([False, False])).sum().backward()
    assert g.placeholder.grad is not None


def test_unknown_fusion():
    with pytest.raises(ValueError, match="fusion.name"):
        create_fusion(DIMS, {"name": "tfn", "dim": 4})
