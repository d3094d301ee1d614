"""``vtag taxonomy validate | show | diff`` through ``vtag.jobs.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vtag.hierarchy.taxonomy import Taxonomy
from vtag.jobs.cli import main

DATA = Path(__file__).resolve().parent / "data"
TINY, TINY_V2 = DATA / "tiny-taxonomy.yaml", DATA / "tiny-taxonomy-v2.yaml"
DEMO = Path(__file__).resolve().parents[1] / "conf" / "taxonomy"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["taxonomy", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------- validate
def test_validate_text(capsys):
    rc, out, err = run(capsys, "validate", TINY)
    assert rc == 0 and err == ""
    assert out.startswith(f"OK {TINY}")
    assert "716ef70bc21e1f0b" in out
    assert "leaves       10 (level 2: 2, level 3: 5, level 4: 3)" in out
    assert "2 exclusive groups, 2 requires rules, 2 cooccur pairs" in out


def test_validate_json(capsys, tiny_taxonomy):
    rc, out, _ = run(capsys, "validate", TINY, "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["version"] == tiny_taxonomy.version
    assert info["label"] == "tiny-v1" and info["valid"] is True
    assert (info["nodes"], info["leaves"], info["max_depth"]) == (19, 10, 4)
    assert info["leaves_per_level"] == {"2": 2, "3": 5, "4": 3}
    assert info["nodes_per_level"] == {"1": 3, "2": 6, "3": 7, "4": 3}
    assert (info["exclusive_groups"], info["requires_rules"], info["cooccur_pairs"]) == (2, 2, 2)


@pytest.mark.parametrize(
    "text, node, reason",
    [
        ("nodes:\n - {id: a, name: A, parent: b}\n - {id: b, name: B, parent: a}\n", None, "cycle"),
        ("nodes:\n - {id: a, name: A}\n - {id: b, name: B, parent: a}\n - {id: b, name: C}\n", "b", "duplicate id"),
        ("nodes:\n - {id: a, name: A}\n - {id: b, name: B}\nconstraints:\n  exclusive: [[a, nope]]\n",
         "nope", "unknown id"),
        ("nodes:\n - {id: a, name: A}\n - {id: b, name: B}\nconstraints:\n  requires: {a: [ghost]}\n",
         "ghost", "unknown id"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_invalid_files_exit_1_naming_the_node(capsys, tmp_path, text, node, reason, as_json):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")
    rc, out, err = run(capsys, "validate", bad, *(["--json"] if as_json else []))
    assert rc == 1
    assert "Traceback" not in err
    assert str(bad) in err and reason in err
    if node is not None:
        assert repr(node) in err
    else:  # a cycle names one of its nodes
        assert "'a'" in err or "'b'" in err
    if as_json:
        info = json.loads(out)
        assert info["valid"] is False and reason in info["error"]
        assert info["node"] == node if node else info["node"] in {"a", "b"}
    else:
        assert out == ""


def test_missing_file_exits_1(capsys, tmp_path):
    rc, _, err = run(capsys, "validate", tmp_path / "nope.yaml")
    assert rc == 1 and "cannot read file" in err


# ---------------------------------------------------------------------- show
def test_show_whole_tree(capsys):
    rc, out, _ = run(capsys, "show", TINY)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("tiny-v1  version 716ef70bc21e1f0b  19 nodes, 10 leaves")
    # level-1 nodes in node order (by id), children in file order
    assert lines[1:4] == [
        "film  电影  Film  [3 leaves]",
        "  film_form  形式  [2 leaves]",
        "    film_live  真人电影  [leaf]",
    ]
    assert "      game_ip_spiderman  蜘蛛侠  [leaf]" in lines
    assert len(lines) == 1 + 19


def test_show_depth_and_node(capsys):
    rc, out, _ = run(capsys, "show", TINY, "--depth", "1")
    assert rc == 0
    assert out.splitlines()[1:] == ["film  电影  Film  [3 leaves]", "food  美食  [2 leaves]",
                                    "game  游戏  Games  [5 leaves]"]
    rc, out, _ = run(capsys, "show", TINY, "--node", "game_ip", "--depth", "2")
    assert out.splitlines()[1:] == ["game_ip  游戏IP  [3 leaves]", "  game_ip_marvel  漫威  [2 leaves]",
                                    "  game_ip_wzry  王者荣耀  [leaf]"]


def test_show_on_a_terminal_draws_a_rich_tree(capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    rc, out, _ = run(capsys, "show", TINY, "--node", "game_ip")
    assert rc == 0
    assert "└──" in out or "├──" in out
    for text in ("game_ip_spiderman", "蜘蛛侠", "3 leaves", "game_ip_wzry"):
        assert text in out
    assert "film" not in out


@pytest.mark.parametrize("argv, message", [(["--node", "ghost"], "unknown node id 'ghost'"),
                                           (["--depth", "0"], "at least 1")])
def test_show_bad_arguments(capsys, argv, message):
    rc, _, err = run(capsys, "show", TINY, *argv)
    assert rc == 1 and message in err


# ---------------------------------------------------------------------- diff
def test_diff_json_on_tiny_v1_v2(capsys):
    rc, out, _ = run(capsys, "diff", TINY, TINY_V2, "--json")
    assert rc == 0
    d = json.loads(out)
    assert [e["id"] for e in d["added"]] == ["film_live_action", "film_series", "food_drink"]
    assert [e["id"] for e in d["removed"]] == ["film_ip"]
    assert [e["id"] for e in d["renamed"]] == ["film_anim", "film_ip_marvel", "game"]
    assert [(e["id"], e["old_parent"], e["new_parent"]) for e in d["moved"]] == [
        ("film_ip_marvel", "film_ip", "film_series"), ("game_ip_wzry", "game_ip", "game_theme")]
    assert [(e["old_id"], e["new_ids"]) for e in d["split"]] == [("food_home", ["food_home_cn", "food_home_west"])]
    assert [(e["new_id"], e["old_ids"]) for e in d["merged"]] == [
        ("game_ip_heroes", ["game_ip_ironman", "game_ip_spiderman"]), ("game_theme_arpg", ["game_theme_rpg"])]
    assert d["migration"] == {"keep": 4, "rename": 6, "move": 3, "reinfer": 6}
    assert d["counts"] == {"added": 3, "removed": 1, "renamed": 3, "moved": 2, "split": 1, "merged": 2}
    assert d["old"]["label"] == "tiny-v1" and d["new"]["label"] == "tiny-v2"


def test_diff_text(capsys):
    rc, out, _ = run(capsys, "diff", TINY, TINY_V2)
    assert rc == 0
    assert "\nrenamed (3)\n" in out and "\nmerged (2)\n" in out
    assert "  game            游戏      电子游戏" in out  # CJK columns line up (2 cells per character)
    assert "food_home  家常菜    food_home_cn 中式家常菜, food_home_west 西式家常菜" in out
    assert out.rstrip().endswith(
        "migration of the 19 old ids (descendants of a changed node included):\n"
        "  keep    4\n"
        "  rename  6: 2 renamed, 4 under a renamed ancestor\n"
        "  move    3: 1 moved, 1 moved and renamed, 1 under a moved ancestor\n"
        "  reinfer 6: 1 removed, 1 split up, 3 merged away, 1 leaves that gained children")


def test_diff_identical_and_invalid(capsys, tmp_path):
    rc, out, _ = run(capsys, "diff", TINY, TINY)
    assert rc == 0 and "no node changes" in out
    assert out.rstrip().endswith("  keep    19\n  rename   0\n  move     0\n  reinfer  0")
    bad = tmp_path / "v3.yaml"
    bad.write_text("nodes:\n - {id: game, name: G, replaces: [nowhere]}\n", encoding="utf-8")
    rc, _, err = run(capsys, "diff", TINY, bad)
    assert rc == 1 and "replaces 'nowhere'" in err


# ---------------------------------------------------------------------- the demo taxonomies
def test_demo_v1_validates_with_the_required_shape(capsys):
    rc, out, _ = run(capsys, "validate", DEMO / "demo-v1.yaml", "--json")
    assert rc == 0
    info = json.loads(out)
    assert 700 <= info["leaves"] <= 900
    assert all(info["leaves_per_level"].get(str(h), 0) >= 50 for h in (3, 4, 5))


def test_demo_v1_v2_diff_has_five_of_every_kind(capsys):
    rc, out, _ = run(capsys, "diff", DEMO / "demo-v1.yaml", DEMO / "demo-v2.yaml", "--json")
    assert rc == 0
    d = json.loads(out)
    kinds = ("added", "removed", "renamed", "moved", "split", "merged")
    assert {k: len(d[k]) for k in kinds if len(d[k]) < 5} == {}
    assert sum(d["migration"].values()) == Taxonomy.load(DEMO / "demo-v1.yaml").n_nodes


def test_demo_diff_summary_agrees_with_its_sections(capsys):
    """#19: ``renamed (7)`` beside ``rename 13`` read as a contradiction. The summary counts old ids,
    descendants included; it now splits each action by cause, and the direct causes match the
    sections (renamed, moved, split) while the rest are descendants or merged/removed ids."""
    import re

    rc, out, _ = run(capsys, "diff", DEMO / "demo-v1.yaml", DEMO / "demo-v2.yaml", "--json")
    assert rc == 0
    d = json.loads(out)
    causes, counts = d["migration_causes"], d["migration"]
    assert {a: sum(c.values()) for a, c in causes.items()} == counts
    renamed, moved = {e["id"] for e in d["renamed"]}, {e["id"] for e in d["moved"]}
    assert causes["rename"].get("renamed", 0) == len(renamed - moved)
    assert causes["move"].get("moved", 0) + causes["move"].get("moved_renamed", 0) == len(moved)
    assert causes["move"].get("moved_renamed", 0) == len(renamed & moved)
    assert causes["reinfer"].get("split", 0) == len([e for e in d["split"] if e["old_id"] not in e["new_ids"]])
    assert causes["reinfer"].get("merged", 0) == sum(len(e["old_ids"]) for e in d["merged"]) \
        - sum(e["new_id"] in e["old_ids"] for e in d["merged"])
    assert causes["reinfer"].get("removed", 0) == len(d["removed"])

    rc, text, _ = run(capsys, "diff", DEMO / "demo-v1.yaml", DEMO / "demo-v2.yaml")
    assert rc == 0
    sections = dict((k, int(v)) for k, v in re.findall(r"^(\w+) \((\d+)\)$", text, flags=re.M))
    line = re.search(r"^  rename +(\d+): (\d+) renamed, (\d+) under a renamed ancestor$", text, flags=re.M)
    assert line, text[-600:]
    total, direct, below = map(int, line.groups())
    assert direct == sections["renamed"] - len(renamed & moved) and total == direct + below == counts["rename"]
    line = re.search(r"^  move +(\d+): (\d+) moved(?:, (\d+) moved and renamed)?, (\d+) under a moved ancestor$",
                     text, flags=re.M)
    assert line and int(line[2]) + int(line[3] or 0) == sections["moved"] and int(line[1]) == counts["move"]
