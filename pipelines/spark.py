"""SparkSession configuration: local mode by default, a cluster by configuration (master, memory, conf)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from pyspark.sql import SparkSession

# Settings every featurestack session needs, whatever the master: UTC everywhere and microsecond
# parquet timestamps (Spark 4 refuses nanoseconds; Feast and DuckDB read micros exactly).
BASE_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
}


def spark_conf(
    master: str = "local[*]",
    driver_memory: str = "2g",
    shuffle_partitions: int = 4,
    extra_conf: Mapping[str, str] | None = None,
    app_name: str = "featurestack",
) -> dict[str, str]:
    # Workers must run this interpreter (with our packages), not whatever python is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    return {
        "spark.master": master,
        "spark.app.name": app_name,
        "spark.driver.memory": driver_memory,
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        **BASE_CONF,
        **(extra_conf or {}),
    }


def build_spark_session(**kwargs) -> SparkSession:
    """A session from `spark_conf(**kwargs)`; reuses the running one (Spark allows one per process)."""
    builder = SparkSession.builder
    for key, value in spark_conf(**kwargs).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
