"""The one SparkSession builder: Delta Lake configured, conf layered from ``conf/jobs/*.yaml``."""

from __future__ import annotations

import glob
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


def build_session(conf: dict[str, Any]) -> SparkSession:
    """Build (or reuse) a SparkSession for a job conf from :func:`jobs.config.load_job_conf`.

    Delta comes from ``delta_jars_dir`` (every ``*.jar`` there, for offline clusters) when set, else
    from Maven through ``configure_spark_with_delta_pip`` (cached in ``~/.ivy2``). Python workers
    run the driver's interpreter unless ``PYSPARK_PYTHON`` says otherwise, so executors see the same
    virtual environment in local and local-cluster modes.
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
    for key, value in spark_conf.items():
        builder = builder.config(key, value)
    jars_dir = conf.get("delta_jars_dir") or os.environ.get("VTAG_DELTA_JARS_DIR")
    if jars_dir:
        jars = sorted(glob.glob(os.path.join(str(jars_dir), "*.jar")))
        if not jars:
            raise FileNotFoundError(f"delta_jars_dir {jars_dir} holds no *.jar")
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
