"""vtag.hierarchy.diff: node changes between versions and the migration map."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vtag.hierarchy.diff import diff, migration_map
from vtag.hierarchy.taxonomy import Taxonomy

TEST_DATA = Path(__file__).resolve().parent / "data"

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tiny_v2() -> Taxonomy:
    return Taxonomy.load(TEST_DATA / "tiny-taxonomy-v2.yaml")


# ---------------------------------------------------------------------- hand-written v1 -> v2
def test_tiny_v1_v2_diff_lists(tiny_taxonomy, tiny_v2):
    d = diff(tiny_taxonomy, tiny_v2).to_dict()
    assert d["added"] == [
        {"id": "film_live_action", "name": "动作片", "parent": "film_live"},
        {"id": "film_series", "name": "系列电影", "parent": "film"},
        {"id": "food_drink", "name": "饮品", "parent": "food"},
    ]
    assert d["removed"] == [{"id": "film_ip", "name": "系列IP", "parent": "film"}]
    assert d["renamed"] == [
        {"id": "film_anim", "old_name": "动画电影", "new_name": "动画片"},
        {"id": "film_ip_marvel", "old_name": "漫威", "new_name": "漫威电影宇宙"},
        {"id": "game", "old_name": "游戏", "new_name": "电子游戏"},
    ]
    assert d["moved"] == [
        {"id": "film_ip_marvel", "name": "漫威电影宇宙", "old_parent": "film_ip", "new_parent": "film_series"},
        {"id": "game_ip_wzry", "name": "王者荣耀", "old_parent": "game_ip", "new_parent": "game_theme"},
    ]
    assert d["split"] == [{"old_id": "food_home", "old_name": "家常菜",
                           "new_ids": ["food_home_cn", "food_home_west"], "new_names": ["中式家常菜", "西式家常菜"]}]
    assert d["merged"] == [
        {"new_id": "game_ip_heroes", "new_name": "漫威英雄",
         "old_ids": ["game_ip_ironman", "game_ip_spiderman"], "old_names": ["钢铁侠", "蜘蛛侠"]},
        {"new_id": "game_theme_arpg", "new_name": "动作角色扮演",
         "old_ids": ["game_theme_rpg"], "old_names": ["角色扮演"]},
    ]


def test_tiny_v1_v2_migration(tiny_taxonomy, tiny_v2):
    m = migration_map(tiny_taxonomy, tiny_v2)
    assert list(m) == list(tiny_taxonomy.ids)
    got = {k: (v.action, v.new_ids) for k, v in m.items()}
    assert got == {
        "film": ("keep", ("film",)),
        "food": ("keep", ("food",)),
        "film_form": ("keep", ("film_form",)),
        "food_bake": ("keep", ("food_bake",)),
        "game": ("rename", ("game",)),
        "game_ip": ("rename", ("game_ip",)),             # an ancestor renamed: path_names change
        "game_theme": ("rename", ("game_theme",)),
        "game_ip_marvel": ("rename", ("game_ip_marvel",)),
        "game_theme_moba": ("rename", ("game_theme_moba",)),
        "film_anim": ("rename", ("film_anim",)),
        "film_ip_marvel": ("move", ("film_ip_marvel",)),   # renamed and moved: move wins
        "game_ip_wzry": ("move", ("game_ip_wzry",)),
        "film_ip_spiderman": ("move", ("film_ip_spiderman",)),  # an ancestor moved
        "film_live": ("reinfer", ("film_live",)),          # a leaf that gained a child
        "film_ip": ("reinfer", ()),
        "food_home": ("reinfer", ("food_home_cn", "food_home_west")),
        "game_ip_ironman": ("reinfer", ("game_ip_heroes",)),
        "game_ip_spiderman": ("reinfer", ("game_ip_heroes",)),
        "game_theme_rpg": ("reinfer", ("game_theme_arpg",)),
    }
    assert "gained children" in m["film_live"].reason
    assert m["film_ip"].reason == "removed"
    assert "ancestor moved" in m["film_ip_spiderman"].reason
    assert "ancestor renamed" in m["game_ip"].reason


def test_reverse_direction_has_no_replaces(tiny_taxonomy, tiny_v2):
    # v1 carries no `replaces`, so going back every vanished v2 id is a plain removal
    d = diff(tiny_v2, tiny_taxonomy)
    assert not d.split and not d.merged
    assert {e.id for e in d.removed} == {
        "film_live_action", "film_series", "food_drink", "food_home_cn", "food_home_west",
        "game_ip_heroes", "game_theme_arpg"}


# ---------------------------------------------------------------------- replaces edge cases
def _tax(nodes: list[dict], label: str = "t") -> Taxonomy:
    return Taxonomy.from_dict({"label": label, "nodes": nodes}, source=f"<{label}>")


BASE = [
    {"id": "a", "name": "A"},
    {"id": "a1", "name": "A1", "parent": "a"},
    {"id": "a2", "name": "A2", "parent": "a"},
    {"id": "b", "name": "B"},
    {"id": "b1", "name": "B1", "parent": "b"},
]


def test_split_where_the_old_id_survives_and_merge_into_an_existing_node():
    old = _tax(BASE)
    new = _tax([
        {"id": "a", "name": "A"},
        {"id": "a1", "name": "A1", "parent": "a"},
        {"id": "a1x", "name": "A1 part", "parent": "a", "replaces": ["a1"]},   # a1 partly split off
        {"id": "b", "name": "B"},
        {"id": "b1", "name": "B1", "parent": "b", "replaces": ["a2"]},         # b1 absorbs a2
    ], "new")
    d = diff(old, new)
    assert [(s.old_id, s.new_ids) for s in d.split] == [("a1", ("a1", "a1x"))]
    assert [(m.new_id, m.old_ids) for m in d.merged] == [("b1", ("a2", "b1"))]
    assert not d.added and not d.removed
    m = migration_map(old, new)
    assert (m["a1"].action, m["a1"].new_ids) == ("reinfer", ("a1", "a1x"))
    assert (m["a2"].action, m["a2"].new_ids) == ("reinfer", ("b1",))
    assert m["b1"].action == "keep"


def test_stale_replaces_are_history():
    v2 = [dict(n) for n in BASE if n["id"] != "a2"]
    v2[1]["replaces"] = ["a2"]  # a1 took a2 over in v2
    old, new = _tax(BASE), _tax(v2, "v2")
    assert [(m.new_id, m.old_ids) for m in diff(old, new).merged] == [("a1", ("a1", "a2"))]
    # v3 keeps the same `replaces` line: nothing new between v2 and v3
    assert diff(new, _tax(copy.deepcopy(v2), "v3")).is_empty


@pytest.mark.parametrize(
    "replaces, message",
    [(["ghost"], "replaces 'ghost', which is not in the old version"), (["zz"], "replaces itself")],
)
def test_bad_replaces(replaces, message):
    new = _tax(BASE + [{"id": "zz", "name": "Z", "parent": "b", "replaces": replaces}], "new")
    with pytest.raises(ValueError, match=message):
        diff(_tax(BASE), new)
    with pytest.raises(ValueError, match="node 'zz'"):
        migration_map(_tax(BASE), new)


# ---------------------------------------------------------------------- properties
@st.composite
def trees(draw) -> list[dict]:
    """A random flat node list: 1-3 roots, depth <= 4, unique names."""
    nodes: list[dict] = []

    def grow(parent: str | None, level: int) -> None:
        nid = f"n{len(nodes)}"
        nodes.append({"id": nid, "name": f"名{len(nodes)}", "parent": parent})
        if level < 4:
            for _ in range(draw(st.integers(0 if level > 1 else 1, 3))):
                grow(nid, level + 1)

    for _ in range(draw(st.integers(1, 3))):
        grow(None, 1)
    return nodes


@SETTINGS
@given(trees())
def test_diff_with_itself_is_empty_and_all_keep(nodes):
    tax = _tax(nodes)
    assert diff(tax, tax).is_empty
    assert diff(tax, _tax(copy.deepcopy(nodes), "copy")).to_dict() == {k: [] for k in diff(tax, tax).KINDS}
    m = migration_map(tax, tax)
    assert set(m) == set(tax.ids)
    assert all(v.action == "keep" and v.new_ids == (k,) for k, v in m.items())


KINDS = ["rename", "move", "split", "merge", "add", "remove"]


def _leaves(nodes: list[dict]) -> list[str]:
    parents = {n["parent"] for n in nodes}
    return [n["id"] for n in nodes if n["id"] not in parents]


def _subtree(nodes: list[dict], root: str) -> set[str]:
    out, grew = {root}, True
    while grew:
        more = {n["id"] for n in nodes if n["parent"] in out} - out
        grew, out = bool(more), out | more
    return out


@st.composite
def edit_scripts(draw):
    """(old nodes, new nodes, expected {kind: ...}) — each edit touches its own nodes."""
    old = draw(trees())
    new = copy.deepcopy(old)
    by_id = {n["id"]: n for n in new}
    leaves = _leaves(old)
    used: set[str] = set()
    expect: dict[str, object] = {"added": set(), "removed": set(), "renamed": set(), "moved": set(),
                                 "split": {}, "merged": {}}
    fresh = iter(f"x{i}" for i in range(1000))

    def free_leaf() -> str | None:
        options = [x for x in leaves if x not in used]
        if not options:
            return None
        x = draw(st.sampled_from(options))
        used.add(x)
        return x

    for kind in draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=6)):
        if kind == "rename":
            old_ids = {o["id"] for o in old}
            options = [n["id"] for n in new if n["id"] in old_ids and n["id"] not in used]
            if options:
                x = draw(st.sampled_from(options))
                used.add(x)
                by_id[x]["name"] += "·新"
                expect["renamed"].add(x)
        elif kind == "move":
            x = free_leaf()
            targets = [n["id"] for n in new if x and n["id"] not in (x, by_id[x]["parent"])]
            if x and targets:
                target = draw(st.sampled_from(targets))
                used.add(target)  # so that no later edit removes it
                by_id[x]["parent"] = target
                expect["moved"].add(x)
        elif kind in ("split", "remove"):
            x = free_leaf()
            if x:
                parent = by_id.pop(x)["parent"]
                new[:] = [n for n in new if n["id"] != x]
                if kind == "split":
                    parts = (next(fresh), next(fresh))
                    new.extend({"id": p, "name": f"{p}名", "parent": parent, "replaces": [x]} for p in parts)
                    expect["split"][x] = parts
                else:
                    expect["removed"].add(x)
        elif kind == "merge":
            x, y = free_leaf(), free_leaf()
            if x and y:
                parent = by_id[x]["parent"]
                for gone in (x, y):
                    by_id.pop(gone)
                new[:] = [n for n in new if n["id"] not in (x, y)]
                m = next(fresh)
                new.append({"id": m, "name": f"{m}名", "parent": parent, "replaces": [x, y]})
                expect["merged"][m] = (x, y)
        elif kind == "add":
            parent = draw(st.sampled_from([n["id"] for n in new] + [None]))
            used.add(parent)
            a = next(fresh)
            new.append({"id": a, "name": f"{a}名", "parent": parent})
            by_id[a] = new[-1]
            expect["added"].add(a)
    return old, new, expect


@SETTINGS
@given(edit_scripts())
def test_diff_recovers_a_random_edit_script(case):
    old_nodes, new_nodes, expect = case
    old, new = _tax(old_nodes, "old"), _tax(new_nodes, "new")
    d = diff(old, new)
    assert {e.id for e in d.added} == expect["added"]
    assert {e.id for e in d.removed} == expect["removed"]
    assert {e.id for e in d.renamed} == expect["renamed"]
    assert {e.id for e in d.moved} == expect["moved"]
    assert {e.old_id: set(e.new_ids) for e in d.split} == {k: set(v) for k, v in expect["split"].items()}
    assert {e.new_id: set(e.old_ids) for e in d.merged} == {k: set(v) for k, v in expect["merged"].items()}

    m = migration_map(old, new)
    assert set(m) == set(old.ids)  # every old node is covered
    for x in expect["removed"]:
        assert (m[x].action, m[x].new_ids) == ("reinfer", ())
    for x, parts in expect["split"].items():
        assert (m[x].action, set(m[x].new_ids)) == ("reinfer", set(parts))
    for nid, olds in expect["merged"].items():
        for x in olds:
            assert (m[x].action, m[x].new_ids) == ("reinfer", (nid,))
    for x in expect["moved"]:
        assert m[x].action in ("move", "reinfer")
    for x in expect["renamed"]:
        assert m[x].action in ("rename", "move", "reinfer")
    # untouched nodes: keep exactly when nothing above them changed and no child was hung on a leaf
    touched = set(expect["renamed"]) | set(expect["moved"])
    for oid in old.ids:
        if oid not in new or m[oid].action == "reinfer":
            continue
        same_path = old.path(oid) == new.path(oid) and old.path_names(oid) == new.path_names(oid)
        assert (m[oid].action == "keep") == same_path
        if not (set(old.path(oid)) & touched) and oid in new:
            assert m[oid].action == "keep"
        assert m[oid].new_ids == (oid,)
    for oid, mig in m.items():
        if oid in new:
            gained_children = old.by_id[oid].is_leaf and not new.by_id[oid].is_leaf
            assert (mig.action == "reinfer") == gained_children
