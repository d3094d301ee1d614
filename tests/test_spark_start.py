"""Fast, quiet Spark start (#19 item 1): local Delta jars chosen offline, Spark's logs to a file,
errors as one line. No JVM here: bench/spark_start.py measures the start itself."""

from __future__ import annotations

import pytest

from vtag.jobs.spark import jars as spark_jars
from vtag.jobs.spark import session as S


@pytest.fixture()
def clean_env(monkeypatch):
    for k in ("VTAG_DELTA_JARS_DIR", "VTAG_DELTA_JARS", "VTAG_VERBOSE", "PYSPARK_GATEWAY_PORT"):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def test_delta_jars_prefer_the_conf_then_the_setup_folder(clean_env, tmp_path):
    setup = tmp_path / "setup"
    setup.mkdir()
    (setup / "io.delta_delta-spark.jar").write_bytes(b"PK")
    clean_env.setattr(spark_jars, "default_dir", lambda: setup)
    assert S.delta_jars({}) == [str(setup / "io.delta_delta-spark.jar")]  # offline: what make venv resolved
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "b.jar").write_bytes(b"PK")
    (mine / "a.jar").write_bytes(b"PK")
    assert S.delta_jars({"delta_jars_dir": str(mine)}) == [str(mine / "a.jar"), str(mine / "b.jar")]
    clean_env.setenv("VTAG_DELTA_JARS", "maven")
    assert S.delta_jars({}) is None  # the old way: Maven through Ivy
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no"):
        S.delta_jars({"delta_jars_dir": str(tmp_path / "empty")})


def test_without_a_setup_folder_delta_comes_from_maven(clean_env, tmp_path):
    clean_env.setattr(spark_jars, "default_dir", lambda: tmp_path / "missing")
    assert S.delta_jars({}) is None


def test_spark_logs_go_to_a_file_unless_verbose(clean_env, tmp_path):
    conf = {"warehouse": str(tmp_path / "wh")}
    spark_conf = {"spark.driver.extraJavaOptions": "-Dderby.system.home=/x"}
    path = S._quiet_logs(conf, spark_conf)
    assert path == tmp_path / ".logs" / "spark.log"
    props = tmp_path / ".logs" / "log4j2-vtag.properties"
    assert f"fileName = {path}" in props.read_text()
    opts = spark_conf["spark.driver.extraJavaOptions"]
    assert opts.startswith("-Dderby.system.home=/x ") and f"-Dlog4j2.configurationFile=file:{props}" in opts
    import logging

    from pyspark.logger import PySparkLogger

    for name in S.PYSPARK_ERROR_LOGGERS:
        handlers = PySparkLogger.getLogger(name).handlers
        assert handlers and all(isinstance(h, logging.FileHandler) for h in handlers)

    clean_env.setenv("VTAG_VERBOSE", "1")
    untouched = {"spark.driver.extraJavaOptions": "-Dderby.system.home=/x"}
    assert S._quiet_logs(conf, untouched) is None and untouched == {"spark.driver.extraJavaOptions": "-Dderby.system.home=/x"}


def test_coordinate_follows_the_conf():
    assert spark_jars.coordinate({"delta_jars_version": "4.4.0", "delta_artifact": "delta-spark_4.1_2.13"}) == (
        "io.delta:delta-spark_4.1_2.13:4.4.0")


def test_errors_are_one_line():
    from vtag.jobs.analytics.sql import one_line

    exc = RuntimeError("[UNRESOLVED_COLUMN.WITH_SUGGESTION] ... `nope` cannot be resolved. SQLSTATE: 42703; line 1 pos 7;\n"
                       "'Project ['nope]\n\nJVM stacktrace:\norg.apache.spark.sql.AnalysisException ...")
    assert one_line(exc) == "[UNRESOLVED_COLUMN.WITH_SUGGESTION] ... `nope` cannot be resolved. SQLSTATE: 42703; line 1 pos 7;"
