"""Taxonomy scale (issue #18): validation without ``[N, N]`` matrices, the same results as the dense
formulas on the real taxonomies, and a clear error for a file that is not UTF-8."""

from __future__ import annotations

import sys
import time
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest
import yaml

import vtag.hierarchy.decode as decode
from vtag.hierarchy.migrate import TagRemapper
from vtag.hierarchy.taxonomy import Taxonomy, TaxonomyError
from vtag.jobs.cli import main as cli_main
from vtag.jobs.cli.taxonomy import summary

REPO = Path(__file__).resolve().parents[1]
TAXONOMIES = [REPO / "tests" / "data" / "tiny-taxonomy.yaml", REPO / "conf" / "taxonomy" / "demo-v1.yaml"]


def _generator():
    sys.path.insert(0, str(REPO / "bench"))
    import taxonomy_scale

    return taxonomy_scale


# ---------------------------------------------------------------------- dense references
def _dense_ancestor(t: Taxonomy) -> np.ndarray:
    """C-HMCNN's R from ``Taxonomy.path`` alone: R[i, j] iff i is on j's path."""
    r = np.zeros((t.n_nodes, t.n_nodes), dtype=bool)
    for j, nid in enumerate(t.ids):
        r[[t.index[a] for a in t.path(nid)], j] = True
    return r


def _dense_close(t: Taxonomy, labels: np.ndarray) -> np.ndarray:
    """The former ``close_ancestors``: a float32 matmul with R^T."""
    return (labels.astype(np.float32) @ _dense_ancestor(t).T.astype(np.float32)) > 0


def _dense_closure(t: Taxonomy) -> np.ndarray:
    """The former ``closure_matrix``: a fixed point of dense products with requires and R^T."""
    n = t.n_nodes
    up = _dense_ancestor(t).T
    req = np.zeros((n, n), dtype=bool)
    for a, bs in t.constraints.requires.items():
        req[t.index[a], [t.index[b] for b in bs]] = True
    c = up.copy()
    while True:
        nxt = c | ((c.astype(np.float32) @ req.astype(np.float32)) > 0)
        nxt = nxt | ((nxt.astype(np.float32) @ up.astype(np.float32)) > 0)
        if (nxt == c).all():
            return c
        c = nxt


@pytest.mark.parametrize("path", TAXONOMIES, ids=lambda p: p.name)
def test_close_ancestors_matches_the_dense_product(path):
    t = Taxonomy.load(path)
    rng = np.random.default_rng(7)
    for density in (0.0, 0.002, 0.02, 0.3, 1.0):
        labels = rng.random((257, t.n_nodes)) < density
        assert (t.close_ancestors(labels) == _dense_close(t, labels)).all(), density
    one = rng.random(t.n_nodes) < 0.01  # a single [N] vector keeps its shape
    closed = t.close_ancestors(one)
    assert closed.shape == one.shape and (closed == _dense_close(t, one[None])[0]).all()
    assert t.close_ancestors(np.zeros((0, t.n_nodes), dtype=bool)).shape == (0, t.n_nodes)
    with pytest.raises(ValueError, match="shape"):
        t.close_ancestors(np.zeros((2, t.n_nodes + 1), dtype=bool))


@pytest.mark.parametrize("path", TAXONOMIES, ids=lambda p: p.name)
def test_lazy_dense_matrices_match_the_dense_formulas(path):
    t = Taxonomy.load(path)
    assert "closure_matrix" not in t.__dict__ and "exclusive_matrix" not in t.__dict__  # not built by load
    assert (t.ancestor_matrix() == _dense_ancestor(t)).all()
    assert (t.closure_matrix == _dense_closure(t)).all()
    assert (t.closure_sparse.to_scipy().toarray() == t.closure_matrix).all()
    excl = np.zeros((t.n_nodes, t.n_nodes), dtype=bool)
    for group in t.constraints.exclusive:
        idx = [t.index[g] for g in group]
        excl[np.ix_(idx, idx)] = True
    np.fill_diagonal(excl, False)
    assert (t.exclusive_matrix == excl).all()
    assert (t.leaf_counts == _dense_ancestor(t)[:, t.leaf_indices].sum(axis=1)).all()


def test_sparse_decoder_plan_decodes_like_the_dense_one(demo_taxonomy, monkeypatch):
    """Above decode._DENSE_CLOSURE_NODES the plan keeps sparse closure rows: same labels."""
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.random((64, demo_taxonomy.n_nodes)),
                             rng.random((64, demo_taxonomy.n_nodes)) ** 8]).astype(np.float32)
    dense = decode.Decoder(demo_taxonomy, thresholds=0.3, stop_threshold=0.4).decode(scores)
    monkeypatch.setattr(decode, "_DENSE_CLOSURE_NODES", 0)
    monkeypatch.setattr(decode, "_PLANS", weakref.WeakKeyDictionary())
    decoder = decode.Decoder(demo_taxonomy, thresholds=0.3, stop_threshold=0.4)
    assert not isinstance(decoder._plan.closure, np.ndarray)
    sparse = decoder.decode(scores)
    assert (sparse.labels == dense.labels).all() and (sparse.leaf == dense.leaf).all()
    assert sparse.labels.sum() > 2 * len(scores)  # extras were accepted, not only paths


# ---------------------------------------------------------------------- scale
@pytest.mark.slow  # ~4 s (a 20k-node taxonomy)
def test_generated_20k_taxonomy_loads_and_validates_in_seconds(tmp_path):
    gen = _generator()
    data = gen.generate_taxonomy(20_000, seed=1)
    path = tmp_path / "t20k.yaml"
    path.write_text(yaml.dump(data, Dumper=yaml.CSafeDumper, allow_unicode=True), encoding="utf-8")
    t0 = time.perf_counter()
    tax = Taxonomy.load(path)
    info = summary(tax)  # what `vtag taxonomy validate` prints
    seconds = time.perf_counter() - t0
    assert info["nodes"] == 20_000 and info["max_depth"] == 5 and set(info["leaves_per_level"]) == {"3", "4", "5"}
    assert info["exclusive_groups"] == 20 and info["requires_rules"] >= 20
    assert seconds < 15, f"load + validate of 20k nodes took {seconds:.1f} s"  # ~1 s; the dense code took ~10 min
    # memory: validation never builds an [N, N] matrix (one would be 400 MB of bool here)
    assert not {"closure_matrix", "exclusive_matrix"} & set(tax.__dict__)
    tracemalloc.start()
    try:
        Taxonomy.from_dict(data, source=str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20, f"validation peaked at {peak / 2**20:.0f} MiB"


def test_contradiction_in_a_large_taxonomy_names_the_node(tmp_path):
    """A requires rule that drags in an exclusive partner is found without the dense product."""
    gen = _generator()
    data = gen.generate_taxonomy(12_000, seed=2)
    parents = {n["parent"]: n["id"] for n in data["nodes"]}
    group = next(g["ids"] for g in data["constraints"]["exclusive"] if g["ids"][0] in parents)
    child = parents[group[0]]
    data["constraints"]["requires"][child] = [group[1]]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.dump(data, Dumper=yaml.CSafeDumper, allow_unicode=True), encoding="utf-8")
    with pytest.raises(TaxonomyError) as err:
        Taxonomy.load(path)
    assert err.value.node == child and str(path) in str(err.value)
    assert "contradicts the hierarchy" in err.value.reason and repr([group[0], group[1]]) in err.value.reason


def test_remapper_reports_an_exclusive_clash(tiny_taxonomy):
    remap = TagRemapper(tiny_taxonomy, tiny_taxonomy)
    row, why = remap.remap("food_home", [("food", 0.9), ("food_home", 0.8), ("food_bake", 0.6)])
    assert row is None and why == "food_home and food_bake are exclusive in tiny-v1"
    row, why = remap.remap("game_ip_wzry", [("game_ip_wzry", 0.7)])
    assert why == "" and {t["node_id"] for t in row.tags} == {
        "game", "game_ip", "game_ip_wzry", "game_theme", "game_theme_moba"}


# ---------------------------------------------------------------------- encoding
GBK_TEXT = "label: gbk\nnodes:\n  - id: game\n    name: 游戏\n    children:\n      - {id: game_rpg, name: 角色扮演}\n"


def test_gbk_file_error_names_file_offset_and_utf8(tmp_path, capsys):
    path = tmp_path / "gbk-taxonomy.yaml"
    raw = GBK_TEXT.encode("gbk")
    path.write_bytes(raw)
    offset = next(i for i, b in enumerate(raw) if b >= 0x80)
    with pytest.raises(TaxonomyError) as err:
        Taxonomy.load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and err.value.source == str(path)
    assert f"byte offset {offset} (line 4)" in msg and "must be UTF-8" in msg
    rc = cli_main(["taxonomy", "validate", str(path)])
    stderr = capsys.readouterr().err
    assert rc == 1 and str(path) in stderr and "UTF-8" in stderr and "Traceback" not in stderr
    path.write_text(GBK_TEXT, encoding="utf-8")  # the same file in UTF-8 loads
    assert Taxonomy.load(path).path_names("game_rpg") == ["游戏", "角色扮演"]
