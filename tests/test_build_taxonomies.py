"""scripts/build_taxonomies.py (with taxonomy_common.py and taxonomy_v2.py): the shipped taxonomy
files are what the curated sources and the real public trees build, and a bad source is refused."""

import shutil
import sys
from pathlib import Path

import pytest

from tests.builders import REPO_ROOT, SHARED_DATA

sys.path.insert(0, str(REPO_ROOT / "scripts"))

import build_taxonomies  # noqa: E402
import taxonomy_v2  # noqa: E402
from taxonomy_common import BuildError  # noqa: E402

SHIPPED = ("demo-v1.yaml", "demo-v2.yaml", "bilibili-v1.yaml")
pytestmark = pytest.mark.skipif(not (SHARED_DATA / "taxonomy").is_dir(),
                                reason=f"the real trees are read from {SHARED_DATA}")


def _src_copy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(build_taxonomies.SRC, src)
    return src


def test_shipped_files_are_up_to_date():
    assert build_taxonomies.main(["--check", "--shared", str(SHARED_DATA)]) == 0


def test_build_writes_the_shipped_bytes_outside_the_repo(tmp_path, capsys):
    out = tmp_path / "out"
    assert build_taxonomies.main(["--shared", str(SHARED_DATA), "--out", str(out)]) == 0
    for name in SHIPPED:
        assert (out / name).read_bytes() == (build_taxonomies.OUT / name).read_bytes(), name
    assert f"wrote {out / 'demo-v1.yaml'}" in capsys.readouterr().out


def test_an_edited_source_makes_check_fail(tmp_path, capsys):
    src = _src_copy(tmp_path)
    game = src / "v1" / "01_game.tsv"
    game.write_text(game.read_text(encoding="utf-8").replace("\t题材\t", "\t题材类型\t", 1), encoding="utf-8")
    assert build_taxonomies.main(["--check", "--shared", str(SHARED_DATA), "--src", str(src)]) == 1
    shown = capsys.readouterr().out
    assert "OUT OF DATE: conf/taxonomy/demo-v1.yaml" in shown
    assert "OUT OF DATE: conf/taxonomy/bilibili-v1.yaml" not in shown


def test_an_unknown_source_key_is_refused(tmp_path, capsys):
    src = _src_copy(tmp_path)
    game = src / "v1" / "01_game.tsv"
    game.write_text(game.read_text(encoding="utf-8").replace("iab:685", "iab:no-such-id", 1), encoding="utf-8")
    assert build_taxonomies.main(["--check", "--shared", str(SHARED_DATA), "--src", str(src)]) == 1
    assert "no-such-id" in capsys.readouterr().err


def test_v2_edits_with_an_unknown_section_are_refused(tmp_path, capsys):
    src = _src_copy(tmp_path)
    (src / "v2_edits.yaml").write_text("rename: []\nrelabel: []\n", encoding="utf-8")
    assert build_taxonomies.main(["--check", "--shared", str(SHARED_DATA), "--src", str(src)]) == 1
    assert "unknown sections ['relabel']" in capsys.readouterr().err


def test_v2_split_of_an_inner_node_and_a_reused_id_are_refused():
    rows = [{"id": "a", "parent": "", "name": "A", "name_en": "A", "source": "curated"},
            {"id": "a_b", "parent": "a", "name": "B", "name_en": "B", "source": "curated"},
            {"id": "a_c", "parent": "a", "name": "C", "name_en": "C", "source": "curated"}]
    with pytest.raises(BuildError, match="has children; split leaves only"):
        taxonomy_v2.apply_edits(rows, {"split": [{"id": "a", "into": [{"id": "x", "name": "X", "name_en": "X"},
                                                                      {"id": "y", "name": "Y", "name_en": "Y"}]}]})
    with pytest.raises(BuildError, match="already used"):
        taxonomy_v2.apply_edits(rows, {"add": [{"id": "a_c", "parent": "a", "name": "D", "name_en": "D"}]})
