"""bench/bilibili_report.py: aggregates of the runs and the Markdown verdict line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    sys.path.insert(0, str(REPO / "bench"))
    import bilibili_report

    return bilibili_report


def _results(report, vtag_scores, peer_scores):
    def runs(scores):
        return [{"leaf_acc": s, "level1_acc": s, "hf1": s, "seconds": 1.0, "seed": k} for k, s in enumerate(scores)]

    return {"vtag": report.aggregate(runs(vtag_scores)), "svm_chars": report.aggregate(runs(peer_scores))}


def _markdown(report, results):
    return report.format_markdown(results, command="c", device="cpu", split_desc="s", seeds=3, n_train=1, n_test=1)


def test_aggregate_gives_mean_and_sample_std(report):
    agg = report.aggregate([{"leaf_acc": 0.5, "level1_acc": 0.6, "hf1": 0.55, "seconds": 1.0},
                            {"leaf_acc": 0.7, "level1_acc": 0.6, "hf1": 0.65, "seconds": 1.0}])
    assert agg["leaf_acc"] == pytest.approx(0.6) and agg["leaf_acc_std"] == pytest.approx(0.1414, abs=1e-4)
    assert "leaf_acc_new" not in agg and len(agg["runs"]) == 2


def test_a_tie_in_the_last_bit_is_reported_as_a_tie(report):
    # the mean of three runs and one run of the same accuracy differ in the last bit of a float
    results = _results(report, [1591 / 2574, 1561 / 2574, 1597 / 2574], [1583 / 2574])  # TNEWS, 2026-12-06
    assert results["vtag"]["leaf_acc"] != results["svm_chars"]["leaf_acc"]
    md = _markdown(report, results)
    assert "(+0.0000: peer ahead or tied)" in md and "vtag ahead" not in md


def test_vtag_ahead_and_behind(report):
    assert "(+0.0100: vtag ahead)" in _markdown(report, _results(report, [0.61, 0.61], [0.60]))
    assert "(-0.0100: peer ahead or tied)" in _markdown(report, _results(report, [0.59, 0.59], [0.60]))


def test_score_is_exact_node_accuracy_with_partial_hierarchical_credit(report):
    import numpy as np

    from vtag.hierarchy.taxonomy import Taxonomy

    tax = Taxonomy.load(REPO / "conf" / "taxonomy" / "bilibili-v1.yaml")
    top = next(n for n in tax.nodes if n.parent is None and tax.children(n.id))
    kids = tax.children(top.id)
    other = next(n for n in tax.nodes if n.parent is None and n.id != top.id)
    i = tax.index
    true = np.array([i[kids[0]], i[kids[0]], i[top.id], i[kids[1]]])
    pred = np.array([i[kids[0]], i[kids[1]], i[top.id], i[other.id]])
    m = report.score(tax, true, pred, returning=np.array([True, True, False, False]))
    assert m["leaf_acc"] == pytest.approx(0.5)  # rows 0 and 2: the exact node, a leaf or an internal one
    assert m["level1_acc"] == pytest.approx(0.75)
    # nodes: true 2+2+1+2 = 7, predicted 2+2+1+1 = 6, shared 2+1+1+0 = 4
    assert m["hf1"] == pytest.approx(2 * 4 / (7 + 6))
    assert m["leaf_acc_returning"] == pytest.approx(0.5) and m["leaf_acc_new"] == pytest.approx(0.5)
    assert "leaf_acc_new" not in report.score(tax, true, pred)
