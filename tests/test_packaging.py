"""The installed distribution (#17 item 5): one top-level import package, ``vtag``, with its conf as
package data; setup.cfg lists every subpackage of the folders it maps.

The slow test builds the wheel from a copy of the working tree (``pip wheel --no-build-isolation``:
no download), installs it with ``--no-deps`` into a fresh venv outside the checkout whose only other
packages are .venv's site-packages (appended by a ``.pth``; its ``.pth`` files, the editable vtag's
finder among them, are not run), and runs it from a temporary directory.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"vtag": "vtag", "vtag.hierarchy": "hierarchy", "vtag.models": "models", "vtag.jobs": "jobs",
           "vtag.conf": "conf"}


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg", encoding="utf-8")
    return cfg


def _lines(value: str) -> list[str]:
    return [ln.strip() for ln in value.strip().splitlines() if ln.strip()]


def test_setup_cfg_maps_the_folders_and_lists_every_subpackage():
    cfg = _setup_cfg()
    mapping = dict(ln.split(" = ") for ln in _lines(cfg["options"]["package_dir"]))
    assert mapping == FOLDERS
    listed = set(_lines(cfg["options"]["packages"]))
    on_disk = set()
    for name, folder in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            if "__pycache__" not in rel:
                on_disk.add(".".join((name, *rel)))
    assert listed == on_disk
    assert _lines(cfg["options.entry_points"]["console_scripts"]) == ["vtag = vtag.jobs.cli:main"]


def test_the_checkouts_vtag_folder_links_to_the_mapped_folders():
    """import-linter (grimp) walks vtag/: its links mirror package_dir, so the contracts see vtag.*."""
    for name, folder in FOLDERS.items():
        if name != "vtag":
            link = REPO / "vtag" / name.split(".", 1)[1]
            assert link.is_symlink() and link.resolve() == (REPO / folder).resolve(), link


def test_predictor_is_exported_lazily():
    code = ("import sys, vtag, vtag.models, vtag.models.schema; assert 'torch' not in sys.modules, 'torch imported'; "
            "from vtag.models import Predictor; from vtag.models.predictor import Predictor as P; "
            "assert Predictor is P and hasattr(Predictor, 'load')")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def _run(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=check, timeout=300)


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_outside_the_checkout(tmp_path):
    # 1. the wheel, built from a copy of what it packs (the checkout stays clean: no build/, no egg-info)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for folder in FOLDERS.values():
        shutil.copytree(REPO / folder, src / folder, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "VTAG_CONF_DIR")}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
         tmp_path, env)
    (wheel,) = dist.glob("vtag-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"vtag", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "vtag/conf/taxonomy/demo-v1.yaml" in names and "vtag/conf/jobs/local.yaml" in names
    assert "vtag/jobs/pipeline/tag.py" in names and "vtag/models/predictor.py" in names

    # 2. a fresh venv (the base interpreter); .venv's packages appended as a plain path entry
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
                .stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    uv = Path(sys.executable).parent / "uv"
    install = ([str(uv), "pip", "install", "--offline", "--python", str(py)] if uv.exists()
               else [sys.executable, "-m", "pip", "--python", str(py), "install"])
    _run([*install, "--no-deps", str(wheel)], tmp_path, env)

    # 3. from a directory outside the checkout
    work = tmp_path / "work"
    work.mkdir()
    done = _run([str(py), "-c", "import vtag, vtag.models, vtag.jobs, vtag.hierarchy, vtag.jobs.cli; "
                                "print(vtag.models.__file__); print(vtag.conf_dir())"], work, env)
    models_file, conf = (Path(line) for line in done.stdout.split())
    assert site.resolve() in models_file.resolve().parents, models_file
    assert conf == (site / "vtag" / "conf").resolve()
    assert REPO not in models_file.resolve().parents
    for bare in ("models", "jobs", "hierarchy"):
        gone = _run([str(py), "-c", f"import {bare}"], work, env, check=False)
        assert gone.returncode != 0 and "ModuleNotFoundError" in gone.stderr, (bare, gone.stderr)
    taxonomy = conf / "taxonomy" / "demo-v1.yaml"
    valid = _run([str(venv / "bin" / "vtag"), "taxonomy", "validate", str(taxonomy)], work, env, check=False)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    version = _run([str(venv / "bin" / "vtag"), "--version"], work, env)
    assert version.stdout.strip() == "vtag " + wheel.name.split("-")[1]
