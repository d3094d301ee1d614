"""models/sparse_wide.py: the TF-IDF table, the fitted linear SVM, and the validated mix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.builders import tiny_config, tiny_frame, tiny_taxonomy, tmp_root
from vtag.models.sparse_wide import TfidfWide, choose_mix_scale, fit_linear_svm


def _docs(rng, n_rows, n_keys, max_len):
    """Rows of kept n-gram ids 1..n_keys (repeats allowed), padded with 0 -> (bow_ids [n, max_len], lists)."""
    rows = [rng.integers(1, n_keys + 1, size=int(rng.integers(1, max_len + 1))).tolist() for _ in range(n_rows)]
    ids = torch.zeros(n_rows, max_len, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, rows


@pytest.mark.parametrize("n_keys,max_len,shuffle", [(30, 12, False), (400, 1000, True)])
def test_tfidf_features_match_scikit_learn_sublinear_smooth_idf_l2(n_keys, max_len, shuffle):
    """Short rows, and rows as long as a 300-character window gives, with the pads between the word
    and the character n-grams (shuffled positions)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.default_rng(0)
    ids, rows = _docs(rng, 40, n_keys, max_len)
    if shuffle:
        ids = ids[:, torch.as_tensor(rng.permutation(max_len))]
    df = np.array([sum(k in r for r in rows) for k in range(1, n_keys + 1)])
    module = TfidfWide(n_keys, 3, max_params=10**6, df=df, n_docs=len(rows))
    ours = module.features(ids).toarray()[:, 1:]  # column 0 is the pad row
    vec = TfidfVectorizer(analyzer=lambda r: [str(k) for k in r], sublinear_tf=True, smooth_idf=True, norm="l2")
    theirs = vec.fit_transform(rows).toarray()
    order = [vec.vocabulary_[str(k)] for k in range(1, n_keys + 1) if str(k) in vec.vocabulary_]
    kept = [k - 1 for k in range(1, n_keys + 1) if str(k) in vec.vocabulary_]
    np.testing.assert_allclose(ours[:, kept], theirs[:, order], atol=1e-5)


def test_fitted_svm_margins_are_linear_svc_decision_values():
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(1)
    n_keys, n_out = 25, 4
    ids, rows = _docs(rng, 80, n_keys, 8)
    y = np.array([min(r) % n_out for r in rows])  # learnable: the smallest id names the class
    df = np.array([sum(k in r for r in rows) for k in range(1, n_keys + 1)])
    module = TfidfWide(n_keys, n_out, max_params=10**6, df=df, n_docs=len(rows), fitted=True)
    x = module.features(ids)
    info = fit_linear_svm(module, x[:60], y[:60], x[60:], y[60:], grid=(0.5, 1.0))
    assert info["C"] in (0.5, 1.0) and info["classes"] == n_out
    ref = LinearSVC(C=info["C"], random_state=0).fit(x[:60], y[:60])
    with torch.no_grad():
        margins = module(ids) / module.scale
    np.testing.assert_allclose(margins.numpy(), ref.decision_function(x), atol=1e-4)


def test_mix_contributes_nothing_until_its_scale_is_chosen_on_validation():
    module = TfidfWide(10, 3, max_params=1000, df=np.ones(10), n_docs=20, mix=True)
    ids = torch.tensor([[1, 2, 0], [3, 3, 4]])
    assert module.fitted and module.mix
    assert float(module.scale) == 0.0 and not module.scale.requires_grad
    assert module(ids) is None  # the deep part trains alone
    seen = []

    def score():  # a validation metric that peaks at scale 2
        seen.append(float(module.scale))
        return -abs(float(module.scale) - 2.0)

    info = choose_mix_scale(module, score, grid=(0.0, 1.0, 2.0, 4.0))
    assert seen == [0.0, 1.0, 2.0, 4.0]
    assert info["scale"] == 2.0 and float(module.scale) == 2.0
    assert module(ids).shape == (2, 3)
    module.scale.fill_(0.0)
    info = choose_mix_scale(module, lambda: 0.5, grid=(0.0, 3.0))
    assert info["scale"] == 0.0  # a tie keeps the deep model alone


def test_choose_mix_scale_refuses_a_module_without_mix():
    module = TfidfWide(5, 2, max_params=100, df=np.ones(5), n_docs=5, fitted=True)
    with pytest.raises(ValueError, match="mix=True"):
        choose_mix_scale(module, lambda: 0.0)


@pytest.mark.slow
def test_training_with_mix_records_the_scale_and_the_bundle_predicts_with_it():
    import json

    from vtag.models.predictor import Predictor
    from vtag.models.training import train

    cfg = tiny_config(epochs=1)
    cfg["modalities"] = ["text", "context"]
    cfg["text"]["bow"].update({"min_count": 1})
    cfg["head"] = {"name": "flat", "hidden": 32, "tfidf_wide": "mix"}
    out = tmp_root() / "mix-bundle"
    frame = tiny_frame(n=96, seed=3)
    res = train(cfg, tiny_taxonomy(), frame, out, progress=False, label="mix")
    mix = res.metrics["tfidf_mix"]
    assert set(mix["validation"]) >= {"0.0", "1.0"}
    assert mix["scale"] == float(res.model.tfidf_wide.scale)
    assert json.loads((out / "metrics.json").read_text())["validation"]["tfidf_mix"]["scale"] == mix["scale"]
    pred = Predictor.load(out, device="cpu")
    assert float(pred.model.tfidf_wide.scale) == mix["scale"]
    assert len(pred.predict(frame.head(8))) == 8


def test_uploader_columns_are_one_hot_beside_the_tfidf_and_fitted_with_it():
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(2)
    n_keys, n_out, buckets = 20, 3, 7
    ids, rows = _docs(rng, 90, n_keys, 6)
    uploader = torch.as_tensor(rng.integers(0, buckets + 1, size=(90, 2)))  # 2 hashes, 0 = null
    y = (uploader[:, 0].numpy() + np.array([min(r) for r in rows])) % n_out  # text and uploader both matter
    df = np.array([sum(k in r for r in rows) for k in range(1, n_keys + 1)])
    module = TfidfWide(n_keys, n_out, max_params=10**6, df=df, n_docs=90, fitted=True, uploader_buckets=buckets)
    x = module.features(ids, uploader)
    assert x.shape == (90, module.table.num_embeddings + buckets + 1)
    onehot = x[:, module.table.num_embeddings:].toarray()
    for i in range(5):
        want = np.zeros(buckets + 1)
        for b in uploader[i].tolist():
            if b:
                want[b] += 1
        np.testing.assert_array_equal(onehot[i], want)
    with pytest.raises(ValueError, match="uploader ids"):
        module.features(ids)
    info = fit_linear_svm(module, x[:70], y[:70], x[70:], y[70:], grid=(1.0,))
    ref = LinearSVC(C=info["C"], random_state=0).fit(x[:70], y[:70])
    with torch.no_grad():
        margins = module(ids, uploader) / module.scale
    np.testing.assert_allclose(margins.numpy(), ref.decision_function(x), atol=1e-4)
    with pytest.raises(ValueError, match="fitted"):
        TfidfWide(n_keys, n_out, max_params=10**6, df=df, n_docs=90, uploader_buckets=buckets)


def test_exact_uploader_columns_have_no_collisions_and_skip_new_uploaders():
    from sklearn.svm import LinearSVC

    from vtag.models.context import key_set, uploader_keys

    rng = np.random.default_rng(4)
    n_keys, n_out = 20, 3
    ids, rows = _docs(rng, 90, n_keys, 6)
    names = [f"up{int(i)}" for i in rng.integers(0, 12, size=90)]
    keys = torch.as_tensor(uploader_keys(names))
    assert len(set(keys.tolist())) == len(set(names)) and int(keys.min()) > 0
    assert uploader_keys([None, "", "up1"])[:2].tolist() == [0, 0]
    train_keys = key_set(keys[:70].numpy())
    y = (np.array([int(n[2:]) for n in names]) + np.array([min(r) for r in rows])) % n_out
    df = np.array([sum(k in r for r in rows) for k in range(1, n_keys + 1)])
    module = TfidfWide(n_keys, n_out, max_params=10**6, df=df, n_docs=90, mix=True, uploader_keys=train_keys)
    x = module.features(ids, uploader_key=keys)
    onehot = x[:, module.table.num_embeddings:].toarray()
    assert onehot.shape == (90, train_keys.size + 1)
    for i in range(90):  # one column per training uploader; an uploader seen only later has none
        assert onehot[i].sum() == (1.0 if int(keys[i]) in set(train_keys.tolist()) else 0.0)
    same = [j for j in range(90) if names[j] == names[0]]
    assert all((onehot[j] == onehot[0]).all() for j in same)
    with pytest.raises(ValueError, match="uploader_key"):
        module.features(ids)
    info = fit_linear_svm(module, x[:70], y[:70], grid=(0.5,))
    ref = LinearSVC(C=info["C"], random_state=0).fit(x[:70], y[:70])
    module.scale.fill_(1.0)
    with torch.no_grad():
        margins = module(ids, uploader_key=keys)
    np.testing.assert_allclose(margins.numpy(), ref.decision_function(x), atol=1e-4)
    assert key_set(np.array([5, 5, 5, 3, 3, 9, 0]), max_keys=2).tolist() == [3, 5]  # the most frequent
    with pytest.raises(ValueError, match="either"):
        TfidfWide(n_keys, n_out, max_params=10**6, df=df, n_docs=90, mix=True, uploader_buckets=4,
                  uploader_keys=train_keys)


def test_new_uploaders_are_scored_by_a_text_only_svm():
    from sklearn.svm import LinearSVC

    from vtag.models.context import key_set, uploader_keys

    rng = np.random.default_rng(6)
    n_keys, n_out = 20, 3
    ids, rows = _docs(rng, 120, n_keys, 6)
    names = [f"up{int(i)}" for i in rng.integers(0, 15, size=120)]
    names[100:] = [f"late{i}" for i in range(20)]  # uploaders first seen after training
    names[5] = None  # no uploader at all
    keys = torch.as_tensor(uploader_keys(names))
    train_keys = key_set(keys[:100].numpy())
    y = (np.array([sum(map(ord, n)) % 7 if n else 0 for n in names]) + np.array([min(r) for r in rows])) % n_out
    df = np.array([sum(k in r for r in rows) for k in range(1, n_keys + 1)])
    module = TfidfWide(n_keys, n_out, max_params=10**6, df=df, n_docs=120, mix=True, uploader_keys=train_keys,
                       new_uploader_svm=True)
    x = module.features(ids, uploader_key=keys)
    n_text = module.table.num_embeddings
    info = fit_linear_svm(module, x[:100], y[:100], grid=(0.5,))
    assert info["C"] == 0.5 and info["text_C"] == 0.5
    both = LinearSVC(C=0.5, random_state=0).fit(x[:100], y[:100]).decision_function(x)
    text = LinearSVC(C=0.5, random_state=0).fit(x[:100, :n_text], y[:100]).decision_function(x[:, :n_text])
    module.scale.fill_(1.0)
    module.text_scale.fill_(1.0)
    with torch.no_grad():
        margins = module(ids, uploader_key=keys).numpy()
        no_uploaders = module(ids).numpy()
    known = np.isin(keys.numpy(), train_keys)
    assert known[:100].sum() == 99 and not known[100:].any()
    np.testing.assert_allclose(margins[known], both[known], atol=1e-4)
    np.testing.assert_allclose(margins[~known], text[~known], atol=1e-4)  # the null and the later uploaders
    np.testing.assert_allclose(no_uploaders, text, atol=1e-4)  # a batch without uploader input: text only
    assert not np.allclose(both[~known], text[~known], atol=1e-3)  # the two SVMs do differ
    # C chosen on the validation rows of new uploaders when there are enough of them
    module2 = TfidfWide(n_keys, n_out, max_params=10**6, df=df, n_docs=120, mix=True, uploader_keys=train_keys,
                        new_uploader_svm=True)
    info = fit_linear_svm(module2, x[:100], y[:100], x[100:], y[100:], grid=(0.1, 1.0))
    assert info["text_C"] in (0.1, 1.0) and info["text_val_acc"] is not None
    # keys of every labeled row (as training makes them), SVM fitted on the earlier rows only: the
    # later uploaders have columns but no rows in the fit, so they still get the text-only SVM
    all_keys = key_set(keys.numpy())
    module3 = TfidfWide(n_keys, n_out, max_params=10**6, df=df, n_docs=120, mix=True, uploader_keys=all_keys,
                        new_uploader_svm=True)
    x3 = module3.features(ids, uploader_key=keys)
    fit_linear_svm(module3, x3[:100], y[:100], grid=(0.5,))
    module3.scale.fill_(1.0)
    module3.text_scale.fill_(1.0)
    with torch.no_grad():
        np.testing.assert_allclose(module3(ids, uploader_key=keys).numpy()[100:], text[100:], atol=1e-4)
    assert int(module3.uploader_fitted.sum()) == all_keys.size - 20
    with pytest.raises(ValueError, match="exact"):
        TfidfWide(n_keys, n_out, max_params=10**6, df=df, n_docs=120, mix=True, uploader_buckets=4,
                  new_uploader_svm=True)
    # the mix weighs the two SVMs apart: scale first (both tied), then text_scale alone
    module.scale.fill_(0.0)
    module.text_scale.fill_(0.0)
    assert module(ids, uploader_key=keys) is None
    seen = []

    def score():  # peaks at scale 2 (tied pass), then at text_scale 4
        seen.append((float(module.scale), float(module.text_scale)))
        return -abs(float(module.scale) - 2.0) - abs(float(module.text_scale) - 4.0)

    info = choose_mix_scale(module, score, grid=(0.0, 2.0, 4.0))
    assert seen == [(0.0, 0.0), (2.0, 2.0), (4.0, 4.0), (2.0, 0.0), (2.0, 2.0), (2.0, 4.0)]
    assert (info["scale"], info["text_scale"]) == (2.0, 4.0)
    with torch.no_grad():
        mixed = module(ids, uploader_key=keys).numpy()
    np.testing.assert_allclose(mixed[known], 2.0 * both[known], atol=1e-4)
    np.testing.assert_allclose(mixed[~known], 4.0 * text[~known], atol=1e-4)

@pytest.mark.slow
def test_training_refits_the_svm_on_validation_rows_too_and_the_bundle_keeps_exact_uploaders():
    from vtag.models.predictor import Predictor
    from vtag.models.training import train
    from vtag.models.training.post import refit_svm_wide

    cfg = tiny_config(epochs=1)
    cfg["modalities"] = ["text", "context"]
    cfg["text"]["bow"].update({"min_count": 1})
    cfg["head"] = {"name": "flat", "hidden": 32, "tfidf_wide": "mix", "tfidf_wide_uploader": "exact",
                   "tfidf_wide_new_uploader_svm": True}
    out = tmp_root() / "refit-bundle"
    frame = tiny_frame(n=96, seed=5)
    res = train(cfg, tiny_taxonomy(), frame, out, progress=False, label="refit")
    assert res.metrics["tfidf_refit_rows"] == len(frame)  # training + validation rows
    assert "text_scale" in res.metrics["tfidf_mix"]  # the new uploaders' SVM has its own weight
    wide = res.model.tfidf_wide
    assert wide.exact_uploaders and wide.uploader_keys.numel() == frame["uploader_id"].nunique()
    pred = Predictor.load(out, device="cpu")
    torch.testing.assert_close(pred.model.tfidf_wide.uploader_keys, wide.uploader_keys)
    torch.testing.assert_close(pred.model.tfidf_wide.uploader_table.weight, wide.uploader_table.weight)
    torch.testing.assert_close(pred.model.tfidf_wide.text_table.weight, wide.text_table.weight)
    assert wide.svm_text_c is not None and float(wide.text_table.weight.abs().sum()) > 0
    assert len(pred.predict(frame.head(8))) == 8
    # the refit is the same SVM fitted on every row: refitting on the training rows alone differs
    before, text_before = wide.table.weight.clone(), wide.text_table.weight.clone()
    tr = frame.sample(frac=0.5, random_state=0)
    refit_svm_wide(res.model, res.featurizer, tiny_taxonomy(), tr, tr.iloc[:0], seed=0)
    assert torch.equal(wide.table.weight, before)  # no validation rows: nothing to add, skipped
    assert wide.svm_c is not None
    refit_svm_wide(res.model, res.featurizer, tiny_taxonomy(), tr, frame.drop(tr.index).head(8), seed=0)
    assert not torch.equal(wide.table.weight, before)  # fewer rows, another fit
    assert not torch.equal(wide.text_table.weight, text_before)


def test_outputs_sharing_a_class_take_its_margin_and_outputs_without_one_stay_below():
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(4)
    n_keys = 25
    ids, rows = _docs(rng, 90, n_keys, 8)
    y = np.array([10 + 5 * (min(r) % 3) for r in rows])  # class ids 10, 15, 20 (node indices, say)
    df = np.array([sum(k in r for r in rows) for k in range(1, n_keys + 1)])
    module = TfidfWide(n_keys, 6, max_params=10**6, df=df, n_docs=len(rows), fitted=True)
    x = module.features(ids)
    output_class = np.array([10, 10, 15, -1, 20, 20])
    info = fit_linear_svm(module, x, y, grid=(0.5,), output_class=output_class)
    assert info["classes"] == 3
    svc = LinearSVC(C=0.5, random_state=0).fit(x, y)
    ref = svc.decision_function(x)  # columns: classes 10, 15, 20
    with torch.no_grad():
        margins = (module(ids) / module.scale).numpy()
    np.testing.assert_allclose(margins[:, [0, 1, 2, 4, 5]], ref[:, [0, 0, 1, 2, 2]], atol=1e-4)
    np.testing.assert_allclose(margins[:, 3], svc.intercept_.min() - 1.0, atol=1e-5)  # no class: a bias below all
    with pytest.raises(ValueError, match="output_class"):
        fit_linear_svm(module, x, y, grid=(0.5,), output_class=output_class[:4])
