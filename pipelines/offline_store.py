"""The offline store: date-partitioned parquet, one sorted file per partition, published atomically.

    {table_dir}/date=YYYY-MM-DD/part-00000.parquet

Spark writes a partition into a staging folder beside the table (`{table_dir.parent}/_staging/...`, on
the same filesystem, so renames are cheap, and outside `table_dir`, so readers globbing the table never
see it), which is reduced to the single part file. Publication is then one atomic rename: the staged
file `os.replace`s `part-00000.parquet` in the partition folder (or, for a partition's first write, the
staging folder holding just that file is renamed to the partition folder). A reader globbing
`date=*/*.parquet` sees the old complete file or the new complete file, never none and never both, and
a process killed at any point (Spark included) leaves the previous partition as it was; its leftovers
are outside the table and removed by the next write of that partition. Rows totally ordered in one file
make a rerun write the same bytes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import MapType

from core.lake import partition_dir

PART_FILE = "part-00000.parquet"
STAGING_DIR = "_staging"
# Only where the staging folder is on another filesystem than the table is the new file copied into
# the partition folder first, under this hidden name that no `*.parquet` glob matches (and that Spark,
# pyarrow and Feast skip as hidden), then replaced onto PART_FILE.
TEMP_PREFIX = f".{PART_FILE}."
TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class PartitionWrite:
    path: Path
    rows: int
    seconds: float


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


def _fsync(path: Path) -> None:
    """Flush a file's contents, or a folder's entries, to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def _exclusive(staging_root: Path) -> Iterator[None]:
    """One writer of a partition at a time (an flock on its staging folder, released by the kernel when
    its holder dies): what the holder finds left in the staging folder is a dead attempt's."""
    staging_root.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(staging_root, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _is_attempt(name: str) -> bool:
    """An attempt's staging folder is named by its uuid (earlier versions also left `{uuid}.replaced`)."""
    stem = name.split(".", 1)[0]
    return len(stem) == 32 and all(c in "0123456789abcdef" for c in stem)


def _remove_leftovers(staging_root: Path, target: Path) -> None:
    """What killed attempts left: their staging folders (Spark output, staged files) and, where they
    had to copy across filesystems, hidden temporary files in the partition folder."""
    for leftover in staging_root.iterdir():
        if not _is_attempt(leftover.name):
            continue  # e.g. the staging folders of a table's partitions, beside an unpartitioned table's attempts
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    if target.is_dir():
        for leftover in target.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)


def _publish(staging: Path, part_file: Path, target: Path, attempt: str) -> None:
    """Make `part_file` (the only file in `staging`) `target/PART_FILE` in one atomic rename."""
    _fsync(part_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        # The partition's first write: the folder appears together with its file.
        _fsync(staging)
        try:
            os.rename(staging, target)
        except OSError as error:
            # Another filesystem, or the folder appeared meanwhile: publish the file into it instead.
            if error.errno not in (errno.EXDEV, errno.EEXIST, errno.ENOTEMPTY):
                raise
            target.mkdir(exist_ok=True)
        else:
            _fsync(target.parent)
            return
    try:
        os.replace(part_file, target / PART_FILE)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        temporary = target / f"{TEMP_PREFIX}{attempt}{TEMP_SUFFIX}"
        try:
            shutil.copyfile(part_file, temporary)
            _fsync(temporary)
            os.replace(temporary, target / PART_FILE)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    _fsync(target)


def _write_atomically(df: DataFrame, table_dir: Path, target: Path, sort_by: Sequence[str]) -> PartitionWrite:
    started = time.perf_counter()
    attempt = uuid.uuid4().hex
    staging_root = table_dir.parent / STAGING_DIR / table_dir.name / target.relative_to(table_dir)
    with _exclusive(staging_root):
        _remove_leftovers(staging_root, target)
        staging = staging_root / attempt
        staging.mkdir()
        try:
            part_file = _write_single_file(df, staging, sort_by)
            _check_microsecond_timestamps(part_file)
            rows = pq.read_metadata(part_file).num_rows
            _publish(staging, part_file, target, attempt)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return PartitionWrite(path=target / PART_FILE, rows=rows, seconds=time.perf_counter() - started)


def write_partition(df: DataFrame, table_dir: Path, partition_date: date, sort_by: Sequence[str]) -> PartitionWrite:
    """Replace `{table_dir}/date=YYYY-MM-DD/part-00000.parquet` by the rows of `df`, ordered by `sort_by`
    (then by the other columns), in one file whose columns are exactly `df.columns` (the date is in the
    folder name)."""
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
