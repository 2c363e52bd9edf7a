"""The offline store: date-partitioned parquet, one sorted file per partition, swapped in atomically.

A partition is written by Spark into a staging folder beside (not inside) the table, reduced to a
single `part-00000.parquet`, then swapped in with renames, so readers globbing the table never see a
half-written partition, and a failure before the swap leaves the previous contents in place. Sorting
and a single file make a rerun write identical contents.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

PART_FILE = "part-00000.parquet"


@dataclass(frozen=True)
class PartitionWrite:
    path: Path
    rows: int
    seconds: float


def _staging_dir(target: Path) -> Path:
    # Same filesystem as the target (renames stay atomic), outside the table folder readers glob.
    return target.parent.parent / "_staging" / target.parent.name / f"{target.name}.{uuid.uuid4().hex}"


def _write_single_file(df: DataFrame, staging: Path, sort_by: Sequence[str]) -> None:
    df.coalesce(1).sortWithinPartitions(*sort_by).write.mode("overwrite").parquet(str(staging / "spark"))
    parts = sorted((staging / "spark").glob("part-*.parquet"))
    if len(parts) > 1:
        raise RuntimeError(f"expected one parquet file in {staging}, found {len(parts)}")
    if parts:
        parts[0].rename(staging / PART_FILE)
    else:
        # Spark writes no file for an empty frame: keep the schema with an empty file.
        pq.write_table(df.limit(0).toArrow(), staging / PART_FILE)
    shutil.rmtree(staging / "spark")


def _swap_in(staging: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    retired = staging.with_name(staging.name + ".retired")
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


def _write_atomically(df: DataFrame, target: Path, sort_by: Sequence[str]) -> PartitionWrite:
    started = time.perf_counter()
    staging = _staging_dir(target)
    staging.mkdir(parents=True)
    try:
        _write_single_file(df, staging, sort_by)
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rows = pq.read_metadata(target / PART_FILE).num_rows
    return PartitionWrite(path=target / PART_FILE, rows=rows, seconds=time.perf_counter() - started)


def write_partition(df: DataFrame, table_dir: Path, partition_date: date, sort_by: Sequence[str]) -> PartitionWrite:
    """Replace `{table_dir}/date=YYYY-MM-DD/` with the rows of `df` (sorted by `sort_by`)."""
    return _write_atomically(df, table_dir / f"date={partition_date.isoformat()}", sort_by)


def write_table(df: DataFrame, table_dir: Path, sort_by: Sequence[str]) -> PartitionWrite:
    """Replace an unpartitioned table (a dimension snapshot) the same way."""
    return _write_atomically(df, table_dir, sort_by)


def read_partitions(spark: SparkSession, table_dir: Path, dates: Sequence[date]) -> DataFrame:
    """The rows of the given dates that exist (partition pruning by path); at least one must."""
    paths = [table_dir / f"date={day.isoformat()}" for day in dates]
    existing = [str(path) for path in paths if (path / PART_FILE).exists()]
    if not existing:
        raise FileNotFoundError(f"no partitions of {table_dir} for dates {[d.isoformat() for d in dates]}")
    return spark.read.parquet(*existing)
