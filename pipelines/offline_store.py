"""The offline store: date-partitioned parquet, one sorted file per partition, swapped in atomically.

    {table_dir}/date=YYYY-MM-DD/part-00000.parquet

Spark writes a partition into a staging folder beside the table (`{table_dir.parent}/_staging/...`, on
the same filesystem, so renames are cheap, and outside `table_dir`, so readers globbing the table never
see it), which is reduced to the single part file and then swapped in with renames. A failure before
the swap leaves the previous partition as it was. Rows totally ordered in one file make a rerun write
the same bytes.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import MapType

PART_FILE = "part-00000.parquet"
STAGING_DIR = "_staging"


@dataclass(frozen=True)
class PartitionWrite:
    path: Path
    rows: int
    seconds: float


def partition_dir(table_dir: Path, partition_date: date) -> Path:
    return table_dir / f"date={partition_date.isoformat()}"


def _total_order(df: DataFrame, sort_by: Sequence[str]) -> list[str]:
    """`sort_by`, then every other sortable column: ties in `sort_by` must not leave the row order
    (and so the file bytes) to chance."""
    tie_breakers = [f.name for f in df.schema.fields if f.name not in sort_by and not isinstance(f.dataType, MapType)]
    return [*sort_by, *tie_breakers]


def _write_single_file(df: DataFrame, staging: Path, sort_by: Sequence[str]) -> Path:
    spark_output = staging / "spark"
    # One shuffle into one partition, sorted there: upstream stages keep their parallelism (a bare
    # coalesce(1) would pull them into a single task too), and Spark writes exactly one file, even
    # for an empty frame (with its schema).
    df.repartition(1).sortWithinPartitions(*_total_order(df, sort_by)).write.parquet(str(spark_output))
    (written,) = spark_output.glob("part-*.parquet")
    part_file = written.rename(staging / PART_FILE)
    # What is left is Spark's bookkeeping (_SUCCESS, .crc files).
    shutil.rmtree(spark_output)
    return part_file


def _check_microsecond_timestamps(part_file: Path) -> None:
    # Spark writes INT96 or millis unless the session sets TIMESTAMP_MICROS (pipelines/spark.py does,
    # but FEATURESTACK_SPARK_CONF can override it); Feast and DuckDB need micros.
    for field in pq.read_schema(part_file):
        if pa.types.is_timestamp(field.type) and field.type.unit != "us":
            raise RuntimeError(
                f"{part_file}: column {field.name!r} is {field.type}, not microseconds; "
                "set spark.sql.parquet.outputTimestampType=TIMESTAMP_MICROS"
            )


def _swap_in(staging: Path, target: Path, trash: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.rename(trash)
    try:
        staging.rename(target)
    except BaseException:
        if trash.exists():
            trash.rename(target)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def _write_atomically(df: DataFrame, table_dir: Path, target: Path, sort_by: Sequence[str]) -> PartitionWrite:
    started = time.perf_counter()
    attempt = uuid.uuid4().hex
    staging_root = table_dir.parent / STAGING_DIR / table_dir.name / target.relative_to(table_dir)
    staging = staging_root / attempt
    staging.mkdir(parents=True)
    try:
        part_file = _write_single_file(df, staging, sort_by)
        _check_microsecond_timestamps(part_file)
        rows = pq.read_metadata(part_file).num_rows
        _swap_in(staging, target, trash=staging_root / f"{attempt}.replaced")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PartitionWrite(path=target / PART_FILE, rows=rows, seconds=time.perf_counter() - started)


def write_partition(df: DataFrame, table_dir: Path, partition_date: date, sort_by: Sequence[str]) -> PartitionWrite:
    """Replace `{table_dir}/date=YYYY-MM-DD/` by the rows of `df`, ordered by `sort_by` (then by the
    other columns), in one file whose columns are exactly `df.columns` (the date is in the folder name)."""
    return _write_atomically(df, table_dir, partition_dir(table_dir, partition_date), sort_by)


def write_table(df: DataFrame, table_dir: Path, sort_by: Sequence[str]) -> PartitionWrite:
    """Replace an unpartitioned table (a dimension snapshot), `{table_dir}/part-00000.parquet`, the same way."""
    return _write_atomically(df, table_dir, table_dir, sort_by)


def read_partitions(spark: SparkSession, table_dir: Path, dates: Sequence[date]) -> DataFrame:
    """The rows of those of `dates` whose partition exists (pruned by path, so no `date` column); at
    least one must exist."""
    existing = [str(path) for day in dates if (path := partition_dir(table_dir, day) / PART_FILE).exists()]
    if not existing:
        raise FileNotFoundError(f"no partitions of {table_dir} for dates {[day.isoformat() for day in dates]}")
    return spark.read.parquet(*existing)
