"""Shared fixtures: one local[2] SparkSession for the whole run, tiny data paths."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VTAG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def tiny_taxonomy_path() -> Path:
    return TEST_DATA / "tiny-taxonomy.yaml"


@pytest.fixture(scope="session")
def tiny_taxonomy(tiny_taxonomy_path):
    from vtag.hierarchy.taxonomy import Taxonomy

    return Taxonomy.load(tiny_taxonomy_path)


@pytest.fixture(scope="session")
def demo_taxonomy():
    from vtag.hierarchy.taxonomy import Taxonomy

    return Taxonomy.load(REPO_ROOT / "conf" / "taxonomy" / "demo-v1.yaml")


@pytest.fixture(scope="session")
def spark_warehouse():
    path = Path(tempfile.mkdtemp(prefix="vtag-test-wh-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def spark(spark_warehouse):
    """One local[2] SparkSession with Delta, shared by every Spark test; stopped at the end."""
    from vtag.jobs.config import load_job_conf
    from vtag.jobs.spark.session import build_session

    conf = load_job_conf(
        overrides={
            "master": "local[2]",
            "warehouse": str(spark_warehouse),
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.driver.memory": "2g",
        }
    )
    session = build_session(conf)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_taxonomy):
    """A real (tiny) model bundle trained for two epochs on toy frames of the tiny taxonomy."""
    import yaml

    from vtag.models.data import toy_labeled_frame
    from vtag.models.training import train

    config = yaml.safe_load((REPO_ROOT / "conf" / "model" / "cpu-small.yaml").read_text(encoding="utf-8"))
    config["image"]["input_size"] = 32
    config.setdefault("train", {}).update({"batch_size": 32})
    out = tmp_path_factory.mktemp("tiny-bundle")
    frame = toy_labeled_frame(tiny_taxonomy, n=96, seed=1)
    train(config, tiny_taxonomy, frame, out, epochs=2, seed=0, progress=False, label="tiny-test")
    return out


@pytest.fixture(scope="session")
def retag_v2_path() -> Path:
    return TEST_DATA / "tiny-taxonomy-retag-v2.yaml"


@pytest.fixture(scope="session")
def tiny_bundle_v2(tmp_path_factory, retag_v2_path):
    """A tiny bundle trained on the revised tiny taxonomy (the re-tag target)."""
    import yaml

    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.data import toy_labeled_frame
    from vtag.models.training import train

    v2 = Taxonomy.load(retag_v2_path)
    config = yaml.safe_load((REPO_ROOT / "conf" / "model" / "cpu-small.yaml").read_text(encoding="utf-8"))
    config["image"]["input_size"] = 32
    config.setdefault("train", {}).update({"batch_size": 32})
    out = tmp_path_factory.mktemp("tiny-bundle-v2")
    train(config, v2, toy_labeled_frame(v2, n=96, seed=2), out, epochs=2, seed=0, progress=False, label="tiny-v2")
    return out
