"""vtag.models.profile_mix: the profile's Naive-Bayes evidence in the logits, its weight chosen after training."""

from __future__ import annotations

import pytest
import torch

from tests.builders import tiny_config, tiny_frame, tiny_taxonomy
from vtag.models.profile_mix import ProfileEvidence, choose_evidence_scale
from vtag.models.profiles import ProfileTable


def test_evidence_is_the_log_ratio_block_at_the_head_outputs_times_the_scale():
    n = 4
    ev = ProfileEvidence(n, [1, 3])
    profile = torch.arange(2 * n + 2, dtype=torch.float32).repeat(2, 1)  # [2, 10]
    assert ev(profile) is None  # scale 0: nothing added
    ev.scale.fill_(2.0)
    assert torch.equal(ev(profile), 2.0 * profile[:, [n + 1, n + 3]])
    assert ev(None) is None


def test_the_scale_with_the_best_score_wins_and_ties_keep_the_smaller():
    ev = ProfileEvidence(3, [0, 1, 2])
    got = choose_evidence_scale(ev, lambda: {0.0: 0.1, 1.0: 0.5, 2.0: 0.5, 4.0: 0.2}[float(ev.scale)],
                                grid=(4.0, 2.0, 1.0, 0.0))
    assert got["scale"] == 1.0 and float(ev.scale) == 1.0
    assert got["scores"] == {0.0: 0.1, 1.0: 0.5, 2.0: 0.5, 4.0: 0.2}


@pytest.mark.parametrize("head", ["flat", "dhmcn_v3"])
def test_the_model_adds_the_evidence_only_where_a_profile_has_history(head):
    from vtag.models.factory import create_model
    from vtag.models.featurize import Featurizer

    tax, frame = tiny_taxonomy(), tiny_frame()
    cfg = tiny_config()
    cfg["modalities"] = ["text", "context"]
    cfg["context"]["profile"] = {"enabled": True, "evidence_mix": True}
    cfg["head"]["name"] = head
    f = Featurizer.fit(tax, cfg, frame)
    f.profiles = ProfileTable.from_labels(frame, tax)
    model = create_model(cfg, tax, f).eval()
    batch = f.transform(frame)
    batch["profile"][0] = 0.0  # row 0: a new uploader
    before = model(batch)["prob"]
    model.profile_evidence.scale.fill_(3.0)
    after = model(batch)["prob"]
    assert torch.allclose(before[0], after[0])
    assert not torch.allclose(before[1:], after[1:])
    # the bundle's weights carry the chosen scale
    assert float(model.state_dict()["profile_evidence.scale"]) == 3.0


def test_a_model_without_the_profile_input_has_no_evidence():
    from vtag.models.factory import create_model
    from vtag.models.featurize import Featurizer

    tax, frame = tiny_taxonomy(), tiny_frame()
    cfg = tiny_config()
    cfg["context"]["profile"] = {"enabled": False, "evidence_mix": True}
    model = create_model(cfg, tax, Featurizer.fit(tax, cfg, frame))
    assert model.profile_evidence is None
