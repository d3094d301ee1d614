"""Taxonomy loading, structure, version and validation errors."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from vtag.hierarchy.taxonomy import Taxonomy, TaxonomyError


def test_tiny_structure(tiny_taxonomy):
    t = tiny_taxonomy
    assert t.label == "tiny-v1"
    assert t.leaves_per_level == {2: 2, 3: 5, 4: 3}
    assert t.path("game_ip_spiderman") == ["game", "game_ip", "game_ip_marvel", "game_ip_spiderman"]
    assert t.path_names("film_ip_spiderman") == ["电影", "系列IP", "漫威", "蜘蛛侠"]
    assert t.ancestors("game_theme_rpg") == ["game_theme", "game"]
    # deterministic order: level, then id
    keys = [(n.level, n.id) for n in t.nodes]
    assert keys == sorted(keys)
    assert t.parent_index[t.index["game_theme"]] == t.index["game"]
    assert t.parent_index[t.index["game"]] == -1


def test_ancestor_matrix_is_chmcnn_r(tiny_taxonomy):
    t = tiny_taxonomy
    r = t.ancestor_matrix()
    i, j = t.index["game"], t.index["game_ip_spiderman"]
    assert r[i, j] and not r[j, i]
    assert r.diagonal().all()
    # each column j holds exactly j's path
    assert (r.sum(axis=0) == t.levels).all()
    y = np.zeros((1, len(t)), bool)
    y[0, j] = True
    closed = t.close_ancestors(y)
    assert {t.ids[k] for k in np.flatnonzero(closed[0])} == set(t.path("game_ip_spiderman"))


def test_closure_includes_requires(tiny_taxonomy):
    t = tiny_taxonomy
    row = t.closure_matrix[t.index["game_ip_wzry"]]
    assert {t.ids[k] for k in np.flatnonzero(row)} == {
        "game", "game_ip", "game_ip_wzry", "game_theme", "game_theme_moba"}


def test_version_is_stable_and_content_based(tiny_taxonomy, tiny_taxonomy_path):
    data = yaml.safe_load(tiny_taxonomy_path.read_text(encoding="utf-8"))
    assert Taxonomy.from_dict(data).version == tiny_taxonomy.version
    data["label"] = "another label"
    data["nodes"][0]["name_en"] = "Gaming"
    assert Taxonomy.from_dict(data).version == tiny_taxonomy.version
    data["nodes"][0]["name"] = "电子游戏"
    assert Taxonomy.from_dict(data).version != tiny_taxonomy.version


def test_flat_form_equals_nested(tiny_taxonomy):
    flat = [
        {"id": n.id, "name": n.name, "parent": n.parent}
        for n in reversed(tiny_taxonomy.nodes)
    ]
    d = tiny_taxonomy.to_dict()
    d["nodes"] = flat
    assert Taxonomy.from_dict(d).version == tiny_taxonomy.version


def _write(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    "text, node, reason",
    [
        ("nodes:\n - {id: a, name: A}\n - {id: a, name: B}\n", "a", "duplicate id"),
        ("nodes:\n - {id: a, name: A, parent: b}\n - {id: b, name: B, parent: a}\n", None, "cycle"),
        ("nodes:\n - {id: a, name: A, parent: zz}\n", "a", "unknown parent"),
        ("nodes:\n - {id: a, name: A}\n - {id: b, name: B}\nconstraints:\n  exclusive: [[a, nope]]\n",
         "nope", "unknown id"),
        ("nodes:\n - {id: a, name: A}\nconstraints:\n  requires: {ghost: [a]}\n", "ghost", "unknown id"),
        ("nodes:\n - {id: a, name: A}\n - {id: b, name: B, parent: a}\nconstraints:\n  exclusive: [[a, b]]\n",
         "b", "own ancestor"),
        ("nodes:\n - {id: a, name: A}\n - {id: b, name: B}\nconstraints:\n  exclusive: [[a, b]]\n"
         "  requires: {a: [b]}\n", "a", "contradicts"),
        ("nodes:\n - {id: a}\n", "a", "name"),
        ("nodes:\n - {id: a, name: A}\n - {id: b, name: B}\nconstraints:\n  cooccur: [[a, b, 1.5]]\n",
         "a", "outside"),
    ],
)
def test_errors_name_file_node_and_reason(tmp_path, text, node, reason):
    p = _write(tmp_path, text)
    with pytest.raises(TaxonomyError) as err:
        Taxonomy.load(p)
    msg = str(err.value)
    assert str(p) in msg
    assert reason in msg
    if node is not None:
        assert repr(node) in msg


def test_cycle_message_names_a_node(tmp_path):
    p = _write(tmp_path, "nodes:\n - {id: a, name: A, parent: b}\n - {id: b, name: B, parent: a}\n")
    with pytest.raises(TaxonomyError) as err:
        Taxonomy.load(p)
    assert err.value.node in {"a", "b"}
