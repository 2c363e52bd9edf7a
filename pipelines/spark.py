"""SparkSession builder: local mode by default, a cluster by configuration (master, memory, extra conf)."""

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
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
}


def build_spark_session(
    master: str = "local[*]",
    driver_memory: str = "2g",
    shuffle_partitions: int = 4,
    conf: Mapping[str, str] | None = None,
    app_name: str = "featurestack",
) -> SparkSession:
    # Workers must run this interpreter (with our packages), not whatever python is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    )
    for key, value in {**BASE_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
