"""models/node_svm.py: one binary SVM per node (the DHMCN heads' TF-IDF SVM), and its mix in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.builders import tiny_config, tiny_frame, tiny_taxonomy, tmp_root
from vtag.models.node_svm import CONSTANT_MARGIN, fit_node_svc
from vtag.models.sparse_wide import TfidfWide, fit_linear_svm


def _rows(seed: int, n: int = 120, n_keys: int = 24, max_len: int = 8):
    """``(bow_ids [n, max_len], module, features)``: random rows of kept n-gram ids 1..n_keys."""
    rng = np.random.default_rng(seed)
    rows = [rng.integers(1, n_keys + 1, size=int(rng.integers(2, max_len + 1))).tolist() for _ in range(n)]
    ids = torch.zeros(n, max_len, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    df = np.array([sum(k in r for r in rows) for k in range(1, n_keys + 1)])
    return ids, rows, df


def _targets(rows) -> np.ndarray:
    """``[n, 6]`` targets of a toy tree: nodes 0, 1 roots; 2, 3 under 0; 4, 5 under 1. The smallest
    id picks the leaf; id 7 in a row adds node 1's branch as an extra label (multi-label); rows whose
    smallest id is 1 are labeled at node 0 only (a partial label: 2 and 3 unknown)."""
    t = np.zeros((len(rows), 6), dtype=np.float32)
    for i, r in enumerate(rows):
        leaf = (2, 3, 4, 5)[min(r) % 4]
        t[i, leaf] = t[i, 0 if leaf < 4 else 1] = 1
        if 7 in r:
            t[i, 1] = t[i, 4] = 1
        if min(r) == 1:
            t[i, 2:4] = -1
            t[i, 0] = 1
    return t


def test_each_node_is_a_binary_svm_on_the_rows_where_it_is_known():
    from sklearn.svm import LinearSVC

    ids, rows, df = _rows(0)
    t = _targets(rows)
    module = TfidfWide(24, 6, max_params=10**6, df=df, n_docs=len(rows), fitted=True)
    x = module.features(ids)
    c, acc, (coef, intercept) = fit_node_svc(x, t, (0.5,))
    assert (c, acc) == (0.5, None)  # one C, no validation rows: nothing to choose
    for j in (0, 2, 4):
        known = t[:, j] >= 0
        ref = LinearSVC(C=0.5, random_state=0).fit(x[known], (t[known, j] > 0).astype(int))
        np.testing.assert_allclose(x @ coef[j] + intercept[j], ref.decision_function(x), atol=1e-4)
    assert (t[:, 2] < 0).any() and (t[:, 4] > 0).sum() > (t[:, 5] > 0).sum()  # unknowns and extras were there


def test_constant_and_never_known_nodes_get_a_fixed_margin():
    ids, rows, df = _rows(1, n=40)
    module = TfidfWide(24, 4, max_params=10**6, df=df, n_docs=len(rows), fitted=True)
    x = module.features(ids)
    t = np.zeros((40, 4), dtype=np.float32)
    t[:, 0] = 1  # every row positive
    t[:, 2] = -1  # never known
    t[:10, 3] = -1  # never positive where known, unknown on the rows of its branch (partial labels)
    _, _, (coef, intercept) = fit_node_svc(x, t, (1.0,))
    assert not coef.any()
    np.testing.assert_array_equal(intercept, [CONSTANT_MARGIN, -CONSTANT_MARGIN, 0.0, 0.0])


def test_c_is_chosen_by_the_top_leafs_accuracy_on_validation_rows():
    ids, rows, df = _rows(2, n=200)
    t = _targets(rows)
    module = TfidfWide(24, 6, max_params=10**6, df=df, n_docs=len(rows), fitted=True)
    x = module.features(ids)
    primary = np.array([(2, 3, 4, 5)[min(r) % 4] for r in rows])
    primary[[min(r) == 1 for r in rows]] = 0  # partial labels do not choose C
    grid = (0.001, 1.0)
    c, acc, (coef, intercept) = fit_node_svc(x[:150], t[:150], grid, x[150:], primary[150:], np.array([2, 3, 4, 5]))
    leaves = np.array([2, 3, 4, 5])
    scored = np.isin(primary[150:], leaves)
    for cand in grid:
        _, _, (cf, ic) = fit_node_svc(x[:150], t[:150], (cand,))
        m = x[150:][scored] @ cf[leaves].T + ic[leaves]
        got = float(np.mean(leaves[m.argmax(1)] == primary[150:][scored]))
        assert got <= acc + 1e-12
    assert c == 1.0 and acc > 0.5


def test_fit_linear_svm_with_node_targets_fills_every_output_and_the_text_only_svm():
    ids, rows, df = _rows(3, n=160)
    t = _targets(rows)
    keys = np.array([11, 22, 33])
    uploader_key = torch.as_tensor(np.where(np.arange(160) < 150, keys[np.arange(160) % 3], 99))  # 99: new
    module = TfidfWide(24, 6, max_params=10**6, df=df, n_docs=len(rows), fitted=True, uploader_keys=keys,
                       new_uploader_svm=True)
    x = module.features(ids, uploader_key=uploader_key)
    primary = np.array([(2, 3, 4, 5)[min(r) % 4] for r in rows])
    info = fit_linear_svm(module, x[:120], primary[:120], x[120:], primary[120:], grid=(0.5, 1.0),
                          node_targets=t[:120], leaf_outputs=np.array([2, 3, 4, 5]))
    assert info["C"] in (0.5, 1.0) and info["classes"] == 6 and info["text_C"] in (0.5, 1.0)
    _, _, (coef, intercept) = fit_node_svc(x[:120], t[:120], (info["C"],))
    _, _, (tcoef, tintercept) = fit_node_svc(x[:120][:, :module.table.num_embeddings], t[:120], (info["text_C"],))
    with torch.no_grad():
        margins = (module(ids, uploader_key=uploader_key) / module.scale).numpy()
    old = np.arange(160) < 150
    np.testing.assert_allclose(margins[old], (x @ coef.T + intercept)[old], atol=1e-4)
    text_x = x[:, :module.table.num_embeddings]
    np.testing.assert_allclose(margins[~old], (text_x @ tcoef.T + tintercept)[~old], atol=1e-4)


@pytest.mark.slow
def test_a_dhmcn_head_trains_with_the_svm_mix_and_keeps_co_occurring_tags():
    import json

    from vtag.models.predictor import Predictor
    from vtag.models.training import train

    cfg = tiny_config(epochs=1)
    cfg["modalities"] = ["text", "context"]
    cfg["text"]["bow"].update({"min_count": 1})
    cfg["head"] = {"name": "dhmcn_v3", "hidden": 32, "local_hidden": 16, "tfidf_wide": "mix",
                   "tfidf_wide_uploader": "exact", "tfidf_wide_new_uploader_svm": True}
    out = tmp_root() / "dhmcn-mix-bundle"
    frame = tiny_frame(n=160, seed=3)
    res = train(cfg, tiny_taxonomy(), frame, out, progress=False, label="dhmcn-mix")
    mix = res.metrics["tfidf_mix"]
    assert mix["rule"] == "largest_within_se" and mix["scale"] == float(res.model.tfidf_wide.scale) > 0
    assert mix["validation"]["64.0"] > mix["validation"]["0.0"]  # one epoch of the deep part alone is weak
    assert res.model.tfidf_wide.table.weight.shape[1] == tiny_taxonomy().n_nodes
    assert json.loads((out / "metrics.json").read_text())["validation"]["tfidf_mix"]["scale"] == mix["scale"]
    pred = Predictor.load(out, device="cpu")
    assert float(pred.model.tfidf_wide.scale) == mix["scale"]
    tagged = pred.predict(frame)
    multi = frame["labels"].map(len) > 1
    assert multi.any() and tagged["tags"].map(len)[multi.to_numpy()].mean() > 1  # extras survive the mix
    cfg["head"]["tfidf_wide_mix_rule"] = "nll"
    with pytest.raises(ValueError, match="nll needs head.name: flat"):
        train(cfg, tiny_taxonomy(), frame, tmp_root() / "dhmcn-nll", progress=False, label="nll", epochs=1)


@pytest.mark.slow
def test_a_dhmcn_mix_on_labels_that_stop_at_level_1_is_chosen_by_the_label_node():
    """Labels cut to their level-1 node (leaves at depths 2-4 below them, all unknown): the nodes
    below have no SVM evidence (margin 0, not a negative one), and the weight is chosen by whether
    the decoded level-1 primary is the label."""
    from vtag.models.training import train

    tax = tiny_taxonomy()
    frame = tiny_frame(n=160, seed=5)
    frame["labels"] = [[tax.path(x[0])[0]] for x in frame["labels"]]
    cfg = tiny_config(epochs=1)
    cfg["modalities"] = ["text", "context"]
    cfg["text"]["bow"].update({"min_count": 1})
    cfg["head"] = {"name": "dhmcn_v3", "hidden": 32, "local_hidden": 16, "tfidf_wide": "mix"}
    cfg["decode"] = {"stop_threshold": "auto", "primary": "auto"}
    res = train(cfg, tax, frame, tmp_root() / "dhmcn-mix-partial", progress=False, label="partial")
    mix = res.metrics["tfidf_mix"]
    assert res.metrics["label_nodes"] == 3
    assert mix["scale"] > 0 and mix["validation"][str(mix["scale"])] >= max(0.5, mix["validation"]["0.0"])
    below = [tax.index[n.id] for n in tax.nodes if n.level > 1]
    wide = res.model.tfidf_wide
    assert not wide.table.weight[:, below].any() and not wide.bias[below].any()
