"""The offline-store writer: identical reruns, micros timestamps, atomic partition swap."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import offline_store
from pipelines.offline_store import read_partitions, write_partition

DAY = date(2026, 11, 5)


def _frame(spark, values):
    ts = datetime(2026, 11, 5, 10, 0, 0, 123456, tzinfo=timezone.utc)
    return spark.createDataFrame([(v, ts, float(v)) for v in values], "user_id long, event_timestamp timestamp, value double")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_then_read_back_with_microsecond_timestamps(spark, tmp_path):
    written = write_partition(_frame(spark, [3, 1, 2]), tmp_path / "t", DAY, sort_by=["user_id"])
    assert written.rows == 3 and written.path == tmp_path / "t" / "date=2026-11-05" / "part-00000.parquet"
    schema = pq.read_schema(written.path)
    assert schema.names == ["user_id", "event_timestamp", "value"]
    assert schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    assert pq.read_table(written.path).column("user_id").to_pylist() == [1, 2, 3]
    assert sorted(r.user_id for r in read_partitions(spark, tmp_path / "t", [DAY, date(2026, 11, 4)]).collect()) == [1, 2, 3]


def test_rerun_writes_identical_bytes(spark, tmp_path):
    first = _digest(write_partition(_frame(spark, range(50)), tmp_path / "t", DAY, sort_by=["user_id"]).path)
    second = _digest(write_partition(_frame(spark, reversed(range(50))), tmp_path / "t", DAY, sort_by=["user_id"]).path)
    assert first == second


def test_empty_partition_keeps_its_schema(spark, tmp_path):
    written = write_partition(_frame(spark, [1]).limit(0), tmp_path / "t", DAY, sort_by=["user_id"])
    assert written.rows == 0 and pq.read_schema(written.path).names == ["user_id", "event_timestamp", "value"]


def test_failure_before_the_swap_keeps_the_old_partition_and_leaves_nothing_visible(spark, tmp_path, monkeypatch):
    table = tmp_path / "t"
    old = write_partition(_frame(spark, [1, 2]), table, DAY, sort_by=["user_id"])
    old_digest = _digest(old.path)

    def crash(staging, target):
        raise OSError("disk gone mid-write")

    monkeypatch.setattr(offline_store, "_swap_in", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_partition(_frame(spark, [7, 8, 9]), table, DAY, sort_by=["user_id"])
    assert _digest(old.path) == old_digest
    assert sorted(p.relative_to(table).as_posix() for p in table.rglob("*")) == ["date=2026-11-05", "date=2026-11-05/part-00000.parquet"]


def test_missing_partitions_are_named(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no partitions of .*t for dates \['2026-11-05'\]"):
        read_partitions(spark, tmp_path / "t", [DAY])
