"""bench/hmc_arff.py (the HMC benchmark's loader, not part of the installed package): Clus hierarchical ARFF (tree and DAG), closure, one-hot, C-HMCNN preprocessing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.builders import SHARED_DATA, TEST_DATA

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from hmc_arff import (  # noqa: E402
    ArffError,
    ArffHierarchy,
    HMCDataset,
    Standardizer,
    fill_file_means,
    find_split_files,
    load_hmc_dataset,
    read_arff,
)

DATA = TEST_DATA
HMC = SHARED_DATA / "hmc"


def _rows(d, ids):
    return {i: sorted(d.hierarchy.ids[j] for j in np.flatnonzero(d.Y[i])) for i in ids}


def test_tree_hierarchy_paths_implicit_prefixes_and_dedup():
    d = read_arff(DATA / "hmc-tiny-tree.arff")
    h = d.hierarchy
    assert h.kind == "tree"
    # order (level, id); '01/01' listed twice; '03' and '03/07' implied by '03/07/01'
    assert h.ids == ("01", "02", "03", "01/01", "01/02", "02/05", "03/07", "01/01/03", "03/07/01")
    assert h.level.tolist() == [1, 1, 1, 2, 2, 2, 2, 3, 3]
    assert h.eval_mask.all()
    ix = h.index
    assert {(h.ids[p], h.ids[c]) for p, c in h.edges} == {
        ("01", "01/01"), ("01", "01/02"), ("02", "02/05"), ("03", "03/07"), ("01/01", "01/01/03"), ("03/07", "03/07/01")}
    # R[i, j]: j is i or a descendant of i
    assert h.R[ix["01"], ix["01/01/03"]] and not h.R[ix["01/01/03"], ix["01"]]
    assert h.R[ix["03"], ix["03/07/01"]] and not h.R[ix["02"], ix["01/02"]]
    assert np.diag(h.R).all()


def test_tree_labels_closed_and_features_one_hot():
    d = read_arff(DATA / "hmc-tiny-tree.arff")
    assert _rows(d, range(4)) == {
        0: ["01", "01/01", "01/01/03"],
        1: ["01", "01/02", "02", "02/05"],
        2: ["01"],
        3: ["03", "03/07", "03/07/01"],
    }
    assert d.feature_names == ("x1", "x two", "chip=A", "chip=B", "chip=A-D")
    X = d.X
    assert X.shape == (4, 5)
    np.testing.assert_array_equal(X[:, 2:], [[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]])  # '?' and 'Z' -> zeros
    assert np.isnan(X[0, 1]) and np.isnan(X[2, 0]) and X[3, 0] == 5.0


def test_dag_hierarchy_longest_path_levels_and_skip_roots():
    d = read_arff(DATA / "hmc-tiny-dag.arff")
    h = d.hierarchy
    assert h.kind == "dag"
    assert h.ids == ("GO0003674", "GO0008150", "GA", "GB", "GC", "GD")
    assert h.level.tolist() == [1, 1, 2, 2, 3, 4]  # GD: under GA (level 2) and GC (level 3)
    assert h.eval_mask.tolist() == [False, False, True, True, True, True]  # C-HMCNN's to_skip
    assert _rows(d, range(4)) == {
        0: ["GA", "GB", "GC", "GO0003674", "GO0008150"],
        1: ["GA", "GB", "GO0003674", "GO0008150"],
        2: ["GA", "GB", "GC", "GD", "GO0003674", "GO0008150"],
        3: ["GO0003674"],
    }
    # closure is a fixed point of R: y_i = any_j R[i, j] y_j
    assert np.array_equal((d.Y.astype(int) @ h.R.T.astype(int)) > 0, d.Y)


def test_heads_accept_the_ancestor_matrix():
    pytest.importorskip("torch")
    from vtag.models.dhmcn import HierarchySpec

    for f in ("hmc-tiny-tree.arff", "hmc-tiny-dag.arff"):
        h = read_arff(DATA / f).hierarchy
        spec = HierarchySpec.from_ancestor_matrix(h.R)
        assert spec.level.tolist() == h.level.tolist()
        # the spec keeps the transitive reduction: the DAG's listed shortcut GA -> GD goes
        assert set(map(tuple, spec.edges.tolist())) <= set(map(tuple, h.edges.tolist()))
        assert np.array_equal(spec.R, h.R)


def test_kind_detection_can_be_forced_and_errors_name_file_and_line(tmp_path):
    h = ArffHierarchy.parse("a/b,b/c")  # no 'root' edge: a tree of paths
    assert h.kind == "tree" and "a/b" in h.index
    with pytest.raises(ArffError, match="cycle"):
        ArffHierarchy.parse("root/a,a/b,b/a", kind="dag")
    bad = tmp_path / "bad.arff"
    bad.write_text("@relation r\n@attribute x numeric\n@attribute class hierarchical 01,01/02\n@data\n1,01/03\n")
    with pytest.raises(ArffError, match=r"bad\.arff:5: unknown class '01/03'"):
        read_arff(bad)
    assert read_arff(bad, strict_labels=False).Y.sum() == 0
    bad.write_text("@relation r\n@attribute x numeric\n@attribute class hierarchical 01\n@data\n1,2,01\n")
    with pytest.raises(ArffError, match=r":5: expected 2 fields, got 3"):
        read_arff(bad)


def test_standardizer_matches_sklearn_imputer_then_scaler():
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(50, 4))
    X[rng.random(X.shape) < 0.2] = np.nan
    X[:, 3] = 7.0  # constant column: std 0 -> scale 1
    Z = rng.normal(size=(9, 4))
    Z[0, 0] = np.nan
    ref = StandardScaler().fit(X).transform(SimpleImputer(strategy="mean").fit(X).transform(Z))
    np.testing.assert_allclose(Standardizer.fit(X).transform(Z), ref, rtol=1e-5, atol=1e-5)


def test_protocol_file_mean_quirk_then_fit_on_train_and_valid(tmp_path):
    tree = read_arff(DATA / "hmc-tiny-tree.arff")
    filled = fill_file_means(tree.X)
    assert filled[2, 0] == pytest.approx(3.0) and filled[0, 1] == pytest.approx(14 / 3)
    # "others": no valid file -> fitted on train alone; test NaN filled with test's own means first
    test = tree.subset(np.array([0, 2]))
    ds = HMCDataset("t", train=tree, valid=None, test=test).standardize()
    assert ds.train.X.dtype == np.float32 and not np.isnan(ds.test.X).any()
    np.testing.assert_allclose(ds.train.X[:, 0].mean(), 0.0, atol=1e-6)
    # test row 2 had x1 missing and test's own x1 mean is 1.0 (quirk), scaled by train's stats
    mu, sd = filled[:, 0].mean(), filled[:, 0].std()
    assert ds.test.X[1, 0] == pytest.approx((1.0 - mu) / sd, rel=1e-5)
    no_quirk = HMCDataset("t", train=tree, valid=None, test=test).standardize(file_mean_quirk=False)
    assert no_quirk.test.X[1, 0] == pytest.approx((np.nanmean(tree.X[:, 0]) - mu) / sd, abs=1e-6)
    # with a valid split the statistics come from train+valid
    ds2 = HMCDataset("t", train=tree.subset(np.array([0, 1])), valid=tree.subset(np.array([2, 3])), test=test)
    both = ds2.standardize()
    np.testing.assert_allclose(np.concatenate([both.train.X, both.valid.X])[:, 2:].mean(axis=0), 0.0, atol=1e-6)


def test_split_files_found_by_name(tmp_path):
    for n in ("X_trainvalid.arff", "X_test.arff", "notes.txt"):
        (tmp_path / n).write_text("")
    assert {k: v.name for k, v in find_split_files(tmp_path).items()} == {"train": "X_trainvalid.arff", "test": "X_test.arff"}
    (tmp_path / "X.valid.arff").write_text("")
    assert find_split_files(tmp_path)["valid"].name == "X.valid.arff"


@pytest.mark.skipif(not (HMC / "cellcycle_FUN").is_dir(), reason="shared HMC data not present")
def test_real_cellcycle_fun_matches_the_readme_statistics():
    ds = load_hmc_dataset(HMC / "cellcycle_FUN")
    h = ds.hierarchy
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (1628, 848, 1281)
    assert int(h.eval_mask.sum()) == 499 and ds.in_dim == 77 and h.depth == 6
    assert ds.train.Y[:, h.eval_mask].sum(axis=1).mean() == pytest.approx(8.72, abs=0.01)
    s = ds.standardize()
    assert not np.isnan(s.test.X).any()
