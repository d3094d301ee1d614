"""The suite's shared fixtures: one local[2] SparkSession for the whole run, the tiny taxonomies and
bundles, the analysts' warehouse and the `vtag demo` warehouse. The data they hold is built by
``tests/builders.py`` and ``tests/warehouse_builders.py`` (plain functions, importable by any test)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.builders import REPO_ROOT, TEST_DATA


@pytest.fixture(autouse=True, scope="session")
def torch_one_thread():
    """The session runs torch with one intra-op thread (fixtures of every scope too): tiny models on a
    shared 2-core machine are several times faster so (no OpenMP spin-waits under oversubscription).
    Spark's Python workers and subprocesses are other processes and keep their own setting. The
    Airflow tests run in .venv-airflow, which has no torch: nothing to set there."""
    try:
        import torch
    except ModuleNotFoundError:
        yield
        return

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def torch_one_thread_again(torch_one_thread):
    """Back to one thread after a test whose code set another count (``--threads``, a predictor)."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_taxonomy_path() -> Path:
    return TEST_DATA / "tiny-taxonomy.yaml"


@pytest.fixture(scope="session")
def tiny_taxonomy(tiny_taxonomy_path):
    from tests.builders import tiny_taxonomy

    return tiny_taxonomy()


@pytest.fixture(scope="session")
def demo_taxonomy():
    from vtag.hierarchy.taxonomy import Taxonomy

    return Taxonomy.load(REPO_ROOT / "conf" / "taxonomy" / "demo-v1.yaml")


@pytest.fixture(scope="session")
def retag_v2_path() -> Path:
    return TEST_DATA / "tiny-taxonomy-retag-v2.yaml"


@pytest.fixture(scope="session")
def spark_warehouse():
    path = Path(tempfile.mkdtemp(prefix="vtag-test-wh-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


#: Spark settings of the tests' sessions:
#:
#: - Delta's log replay in one task (the tests' tables have a few files each; Delta's default is 50
#:   tasks, conf/jobs/local.yaml says 4);
#: - no generated code: on rows in the hundreds, compiling each query's projections (Janino, then the
#:   JIT) costs more than it saves. A profile of the fault tests (Java Flight Recorder) had 27 % of the
#:   JVM's samples in code generation; without it they ran in 192 s instead of 233 s, the JVM's CPU
#:   183 s instead of 245 s. Interpreted evaluation is what Spark falls back to for any expression
#:   without code generation, so the tests still exercise the same plans.
TEST_SPARK_CONF = {
    "spark.databricks.delta.snapshotPartitions": "1",
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
}


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
            **TEST_SPARK_CONF,
        }
    )
    session = build_session(conf)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def vtag_spark_args() -> list[str]:
    """``--conf`` arguments that give a ``vtag`` command run as a subprocess the Spark settings of the
    shared session (:data:`TEST_SPARK_CONF`)."""
    return [arg for key, value in TEST_SPARK_CONF.items() for arg in ("--conf", f"{key}={value}")]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_taxonomy):
    """A real (tiny) model bundle of ``conf/model/cpu-small.yaml`` trained for two epochs on toy frames
    of the tiny taxonomy: the tagging jobs' bundle (the unit tests' is ``tests.builders.tiny_bundle()``)."""
    from tests.builders import train_cpu_small_bundle

    return train_cpu_small_bundle(tiny_taxonomy, tmp_path_factory.mktemp("tiny-bundle"), rows_seed=1, label="tiny-test")


@pytest.fixture(scope="session")
def tiny_bundle_v2(tmp_path_factory, retag_v2_path):
    """A tiny bundle trained on the revised tiny taxonomy (the re-tag target)."""
    from tests.builders import train_cpu_small_bundle
    from vtag.hierarchy.taxonomy import Taxonomy

    v2 = Taxonomy.load(retag_v2_path)
    return train_cpu_small_bundle(v2, tmp_path_factory.mktemp("tiny-bundle-v2"), rows_seed=2, label="tiny-v2")


@pytest.fixture(scope="session")
def analysts_warehouse(spark, tmp_path_factory):
    """The analysts' warehouse (``tests.warehouse_builders.build_warehouse``), built once per session and only
    read by the tests that take it (catalog, sql, query, report, reads-never-write)."""
    from tests.warehouse_builders import build_warehouse

    return build_warehouse(spark, tmp_path_factory.mktemp("vtag-analysts"))


@pytest.fixture(scope="session")
def make_demo(spark, tmp_path_factory):
    """The warehouse of `vtag demo` (small settings, ``tests.warehouse_builders.SMALL_DEMO_ARGS``), built once per
    session."""
    from tests.warehouse_builders import build_make_demo

    demo = build_make_demo(spark, tmp_path_factory.mktemp("vtag-make-demo"))
    print(f"\nvtag demo ({' '.join(demo.days)}) built in {demo.seconds:.0f}s")
    return demo
