"""The offline-store writer: read-back, identical reruns, micros timestamps, atomic partition swap."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from pipelines.offline_store import read_partitions, write_partition, write_table

DAY = date(2026, 11, 5)
SCHEMA = "user_id long, event_timestamp timestamp, value double"
TS = datetime(2026, 11, 5, 10, 0, 0, 123456, tzinfo=timezone.utc)


def _frame(spark, rows):
    """rows: (user_id, value), all at TS."""
    return spark.createDataFrame([(user, TS, value) for user, value in rows], SCHEMA)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files_under(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def test_write_then_read_back_with_microsecond_timestamps(spark, tmp_path):
    table = tmp_path / "offline" / "t"
    written = write_partition(_frame(spark, [(3, 3.0), (1, 1.0), (2, 2.0)]), table, DAY, sort_by=["user_id"])
    assert (written.path, written.rows) == (table / "date=2026-11-05" / "part-00000.parquet", 3)
    assert _files_under(table) == ["date=2026-11-05/part-00000.parquet"]
    assert _files_under(tmp_path / "offline" / "_staging") == []
    schema = pq.read_schema(written.path)
    assert schema.names == ["user_id", "event_timestamp", "value"]
    assert schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    assert pq.read_table(written.path).column("user_id").to_pylist() == [1, 2, 3]
    back = read_partitions(spark, table, [DAY, date(2026, 11, 4)])  # the missing day is skipped
    assert back.columns == ["user_id", "event_timestamp", "value"]
    assert sorted((r.user_id, r.event_timestamp.replace(tzinfo=timezone.utc), r.value) for r in back.collect()) == [
        (1, TS, 1.0), (2, TS, 2.0), (3, TS, 3.0),
    ]


def test_rerun_writes_identical_bytes_even_with_ties_in_sort_by(spark, tmp_path):
    rows = [(user % 7, float(user)) for user in range(50)]
    first = _digest(write_partition(_frame(spark, rows), tmp_path / "t", DAY, sort_by=["user_id"]).path)
    second = _digest(write_partition(_frame(spark, rows[::-1]).repartition(3), tmp_path / "t", DAY, sort_by=["user_id"]).path)
    assert first == second


def test_empty_partition_keeps_its_schema(spark, tmp_path):
    written = write_partition(_frame(spark, []), tmp_path / "t", DAY, sort_by=["user_id"])
    assert written.rows == 0 and pq.read_schema(written.path).names == ["user_id", "event_timestamp", "value"]


def test_unpartitioned_table_is_one_file(spark, tmp_path):
    written = write_table(_frame(spark, [(2, 2.0), (1, 1.0)]), tmp_path / "raw" / "merchants", sort_by=["user_id"])
    assert (written.path, written.rows) == (tmp_path / "raw" / "merchants" / "part-00000.parquet", 2)
    assert _files_under(tmp_path / "raw") == ["merchants/part-00000.parquet"]


def _assert_only_the_old_partition(tmp_path: Path, table: Path, old_digest: str) -> None:
    assert _files_under(table) == ["date=2026-11-05/part-00000.parquet"]
    assert _digest(table / "date=2026-11-05" / "part-00000.parquet") == old_digest
    assert _files_under(tmp_path / "_staging") == []


def test_failing_spark_job_keeps_the_old_partition(spark, tmp_path):
    table = tmp_path / "t"
    old_digest = _digest(write_partition(_frame(spark, [(1, 1.0)]), table, DAY, sort_by=["user_id"]).path)
    failing = _frame(spark, [(7, 7.0)]).withColumn("value", F.raise_error(F.lit("bad row")).cast("double"))
    with pytest.raises(Exception, match="bad row"):
        write_partition(failing, table, DAY, sort_by=["user_id"])
    _assert_only_the_old_partition(tmp_path, table, old_digest)


def test_failing_final_rename_restores_the_old_partition(spark, tmp_path, monkeypatch):
    table = tmp_path / "t"
    old_digest = _digest(write_partition(_frame(spark, [(1, 1.0), (2, 2.0)]), table, DAY, sort_by=["user_id"]).path)
    rename = Path.rename

    def rename_failing_into_the_table(self: Path, target):
        # Staging attempts are named by a bare uuid; moving the old partition aside and back still works.
        if Path(target) == table / "date=2026-11-05" and len(self.name) == 32:
            raise OSError("disk gone during the swap")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", rename_failing_into_the_table)
    with pytest.raises(OSError, match="disk gone"):
        write_partition(_frame(spark, [(7, 7.0), (8, 8.0)]), table, DAY, sort_by=["user_id"])
    _assert_only_the_old_partition(tmp_path, table, old_digest)


def test_missing_partitions_are_named(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no partitions of .*t for dates \['2026-11-05'\]"):
        read_partitions(spark, tmp_path / "t", [DAY])


def test_non_microsecond_timestamps_are_refused_before_the_swap(spark, tmp_path):
    table = tmp_path / "t"
    old_digest = _digest(write_partition(_frame(spark, [(1, 1.0)]), table, DAY, sort_by=["user_id"]).path)
    spark.conf.set("spark.sql.parquet.outputTimestampType", "INT96")
    try:
        with pytest.raises(RuntimeError, match="'event_timestamp' is timestamp\\[ns\\], not microseconds"):
            write_partition(_frame(spark, [(7, 7.0)]), table, DAY, sort_by=["user_id"])
    finally:
        spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    _assert_only_the_old_partition(tmp_path, table, old_digest)
