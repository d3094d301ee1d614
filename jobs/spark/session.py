"""The one SparkSession builder: Delta Lake configured, conf layered from ``conf/jobs/*.yaml``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

DELTA_EXTENSIONS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def _is_local_path(p: str) -> bool:
    return "://" not in p or p.startswith("file:")


LOG4J2 = """# written by vtag (jobs/spark/session.py): Spark's and Delta's driver logs go to a file, not the terminal
rootLogger.level = warn
rootLogger.appenderRef.file.ref = vtagfile
appender.vtagfile.type = File
appender.vtagfile.name = vtagfile
appender.vtagfile.fileName = {path}
appender.vtagfile.append = true
appender.vtagfile.layout.type = PatternLayout
appender.vtagfile.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex
"""


def log_file(conf: dict[str, Any]) -> Path:
    """Where the driver's Spark logs go: ``<warehouse>/../.logs/spark.log`` for a local warehouse, else
    ``<tmp>/vtag-logs/spark.log``.

    Parameters
    ----------
    conf
        The job conf.
    """
    wh = str(conf.get("warehouse") or "./warehouse")
    if _is_local_path(wh):
        return Path(wh.removeprefix("file:")).resolve().parent / ".logs" / "spark.log"
    import tempfile

    return Path(tempfile.gettempdir()) / "vtag-logs" / "spark.log"


def _quiet_logs(conf: dict[str, Any], spark_conf: dict[str, Any]) -> Path | None:
    """Point log4j2 at a file (unless ``VTAG_VERBOSE=1``, under spark-submit, or the conf chose its own
    log4j configuration); returns the log file."""
    if os.environ.get("VTAG_VERBOSE") == "1" or "PYSPARK_GATEWAY_PORT" in os.environ:
        return None
    prev = str(spark_conf.get("spark.driver.extraJavaOptions", ""))
    if "log4j" in prev:
        return None
    path = log_file(conf)
    path.parent.mkdir(parents=True, exist_ok=True)
    props = path.parent / "log4j2-vtag.properties"
    text = LOG4J2.format(path=str(path))
    if not props.is_file() or props.read_text(encoding="utf-8") != text:
        props.write_text(text, encoding="utf-8")
    spark_conf["spark.driver.extraJavaOptions"] = (prev + f" -Dlog4j2.configurationFile=file:{props}").strip()
    _python_logs_to(path)
    return path


#: pyspark's Python loggers that print an error's whole JVM trace as one JSON line on stderr
PYSPARK_ERROR_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")


def _python_logs_to(path: Path) -> None:
    """Send pyspark's error-context loggers (JSON lines with the JVM trace) to ``path`` instead of stderr."""
    import logging

    from pyspark.logger import PySparkLogger

    for name in PYSPARK_ERROR_LOGGERS:
        logger = PySparkLogger.getLogger(name)
        for handler in list(logger.handlers):
            if not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == str(path) for h in logger.handlers):
            logger.addHandler(logging.FileHandler(path, encoding="utf-8", delay=True))
        logger.propagate = False


def delta_jars(conf: dict[str, Any]) -> list[str] | None:
    """The Delta jars to pass as ``spark.jars`` (:func:`vtag.jobs.spark.jars.delta_jars`; None: Maven)."""
    from vtag.jobs.spark import jars

    return jars.delta_jars(conf)


def build_session(conf: dict[str, Any]) -> SparkSession:
    """Build (or reuse) a SparkSession for a job conf from :func:`vtag.jobs.config.load_job_conf`.

    Delta comes from local jars (:func:`delta_jars`: ``delta_jars_dir``, else the folder ``make venv``
    filled once) through ``spark.jars``, offline; without them from Maven through
    ``configure_spark_with_delta_pip`` (cached in ``~/.ivy2``). The driver's Spark logs go to
    :func:`log_file` (``VTAG_VERBOSE=1``: to the terminal, as Spark's default). Python workers run
    the driver's interpreter unless ``PYSPARK_PYTHON`` says otherwise, so executors see the same
    virtual environment in local and local-cluster modes.

    Parameters
    ----------
    conf
        The job conf.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(str(conf.get("app_name", "vtag")))
    # Under spark-submit (it sets PYSPARK_GATEWAY_PORT for the driver) its --master wins over the conf's.
    if conf.get("master") and "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(str(conf["master"]))
    spark_conf = dict(conf.get("spark") or {})
    spark_conf.update(DELTA_EXTENSIONS)
    warehouse = conf.get("warehouse")
    if warehouse:
        wh = str(warehouse)
        if _is_local_path(wh):
            wh = str(Path(wh.removeprefix("file:")).resolve())
            Path(wh).mkdir(parents=True, exist_ok=True)
        spark_conf.setdefault("spark.sql.warehouse.dir", wh)
        if _is_local_path(wh):
            # keep the embedded Derby metastore and its log beside the warehouse, not in the cwd
            derby = f"-Dderby.system.home={Path(wh).parent / '.metastore'}"
            prev = spark_conf.get("spark.driver.extraJavaOptions", "")
            if "derby.system.home" not in prev:
                spark_conf["spark.driver.extraJavaOptions"] = (prev + " " + derby).strip()
    _quiet_logs(conf, spark_conf)
    for key, value in spark_conf.items():
        builder = builder.config(key, value)
    jars = delta_jars(conf)
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    else:
        from delta import configure_spark_with_delta_pip

        # The Python package pins the jar version it asks Maven for; delta_jars_version overrides it
        # (Maven Central served delta-spark 4.4.1's Python API but only 4.4.0's jars when this was
        # written, and a patch release of the jars is API-compatible with the Python side).
        jar_version = str(conf.get("delta_jars_version") or "")
        if jar_version:
            scala = str(conf.get("delta_artifact", "delta-spark_4.1_2.13"))
            builder = builder.config("spark.jars.packages", f"io.delta:{scala}:{jar_version}")
        else:
            builder = configure_spark_with_delta_pip(builder)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(str(conf.get("log_level", "WARN")))
    return spark


def warehouse_path(conf: dict[str, Any], table: str) -> str:
    """Location of a Delta table: ``<warehouse>/<table>`` (absolute for local paths)."""
    wh = str(conf.get("warehouse") or "./warehouse")
    if _is_local_path(wh):
        return str(Path(wh.removeprefix("file:")).resolve() / table)
    return wh.rstrip("/") + "/" + table
