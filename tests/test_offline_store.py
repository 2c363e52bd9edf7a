"""The offline-store writer: read-back, identical reruns, micros timestamps, atomic publication (a kill at
any step leaves readers the old or the new complete partition)."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from pipelines.offline_store import read_partitions, write_partition, write_table

pytestmark = pytest.mark.integration

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


class _Killed(BaseException):
    """A SIGKILL, as far as the writer can tell: nothing after it runs (the test snapshots the lake first)."""


def _what_readers_see(spark, table: Path) -> dict[str, list[int]]:
    """The user_ids of DAY's partition as each kind of reader finds them: the `date=*/*.parquet` glob
    (DuckDB, Feast's DuckDB store, our online writer), pyarrow's dataset discovery of the folder, and Spark."""
    files = sorted(p.relative_to(table).as_posix() for p in table.glob("date=*/*.parquet"))
    if not files:
        return {"files": []}
    glob = str(table / "date=*" / "*.parquet")
    return {
        "files": files,
        "duckdb": [row[0] for row in duckdb.sql(f"SELECT user_id FROM read_parquet('{glob}') ORDER BY user_id").fetchall()],
        "pyarrow": sorted(pq.read_table(table / "date=2026-11-05").column("user_id").to_pylist()),
        "spark": sorted(row.user_id for row in read_partitions(spark, table, [DAY]).collect()),
    }


def _complete(user_ids: list[int]) -> dict[str, list[int]]:
    return {"files": ["date=2026-11-05/part-00000.parquet"], "duckdb": user_ids, "pyarrow": user_ids, "spark": user_ids}


@pytest.mark.parametrize("first_write", [False, True], ids=["rewrite", "first-write"])
@pytest.mark.parametrize("step", ["before-publish", "after-publish"])
def test_killed_at_each_step_readers_see_the_old_or_the_new_complete_partition(spark, tmp_path, monkeypatch, step, first_write):
    lake, killed = tmp_path / "lake", tmp_path / "killed"
    table, partition = lake / "t", lake / "t" / "date=2026-11-05"
    old, new = [1, 2], [7, 8, 9]
    if not first_write:
        write_partition(_frame(spark, [(user, float(user)) for user in old]), table, DAY, sort_by=["user_id"])
    real_rename, real_replace = os.rename, os.replace

    def publication(real):
        def intercepted(source, destination, **kwargs):
            # The one step that publishes: a first write's folder renamed in, or the file replaced in.
            if Path(destination) not in (partition, partition / "part-00000.parquet") or "_staging" not in Path(source).parts:
                return real(source, destination, **kwargs)
            if step == "after-publish":
                real(source, destination, **kwargs)
            shutil.copytree(lake, killed, symlinks=True)  # the disk as a SIGKILL right here leaves it
            raise _Killed
        return intercepted

    monkeypatch.setattr(os, "rename", publication(real_rename))
    monkeypatch.setattr(os, "replace", publication(real_replace))
    with pytest.raises(_Killed):
        write_partition(_frame(spark, [(user, float(user)) for user in new]), table, DAY, sort_by=["user_id"])
    monkeypatch.undo()

    seen = _what_readers_see(spark, killed / "t")
    if step == "after-publish":
        assert seen == _complete(new)
    elif first_write:
        assert seen == {"files": []} and not (killed / "t" / "date=2026-11-05").exists()  # no folder without its file
    else:
        assert seen == _complete(old)
    assert [path for path in _files_under(killed / "t") if path != "date=2026-11-05/part-00000.parquet"] == []
    # The next write of the partition clears what the killed one left in staging, and publishes.
    written = write_partition(_frame(spark, [(5, 5.0)]), killed / "t", DAY, sort_by=["user_id"])
    assert _what_readers_see(spark, killed / "t") == _complete([5]) and written.rows == 1
    assert _files_under(killed / "_staging") == []


def test_failing_publish_keeps_the_old_partition(spark, tmp_path, monkeypatch):
    table = tmp_path / "t"
    old_digest = _digest(write_partition(_frame(spark, [(1, 1.0), (2, 2.0)]), table, DAY, sort_by=["user_id"]).path)
    replace = os.replace

    def replace_failing_into_the_table(source, destination, **kwargs):
        if Path(destination) == table / "date=2026-11-05" / "part-00000.parquet":
            raise OSError("disk gone during the publish")
        return replace(source, destination, **kwargs)

    monkeypatch.setattr(os, "replace", replace_failing_into_the_table)
    with pytest.raises(OSError, match="disk gone"):
        write_partition(_frame(spark, [(7, 7.0), (8, 8.0)]), table, DAY, sort_by=["user_id"])
    _assert_only_the_old_partition(tmp_path, table, old_digest)


@pytest.mark.parametrize("first_write", [False, True], ids=["rewrite", "first-write"])
def test_staging_on_another_filesystem_publishes_through_a_hidden_temporary(spark, tmp_path, monkeypatch, first_write):
    table = tmp_path / "t"
    if not first_write:
        write_partition(_frame(spark, [(1, 1.0)]), table, DAY, sort_by=["user_id"])
    rename, replace = os.rename, os.replace
    temporaries = []

    def cross_device(real):
        def intercepted(source, destination, **kwargs):
            if "_staging" in Path(source).parts and "_staging" not in Path(destination).parts:
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            if Path(source).name.startswith(".part-00000.parquet.") and Path(source).name.endswith(".tmp"):
                temporaries.append(Path(source))
                # Until this replace, the partition folder holds the hidden temporary, which readers skip.
                assert [p.name for p in Path(source).parent.glob("*.parquet")] == (["part-00000.parquet"] if not first_write else [])
                assert pq.read_table(Path(source).parent).num_rows == (0 if first_write else 1)
            return real(source, destination, **kwargs)
        return intercepted

    monkeypatch.setattr(os, "rename", cross_device(rename))
    monkeypatch.setattr(os, "replace", cross_device(replace))
    written = write_partition(_frame(spark, [(7, 7.0), (8, 8.0)]), table, DAY, sort_by=["user_id"])
    monkeypatch.undo()
    assert len(temporaries) == 1
    assert pq.read_table(written.path).column("user_id").to_pylist() == [7, 8]
    assert _files_under(table) == ["date=2026-11-05/part-00000.parquet"]
    assert _files_under(tmp_path / "_staging") == []


def test_leftovers_of_a_killed_write_are_invisible_and_removed_by_the_next_write(spark, tmp_path):
    table = tmp_path / "t"
    write_partition(_frame(spark, [(1, 1.0)]), table, DAY, sort_by=["user_id"])
    partition = table / "date=2026-11-05"
    dead = uuid.uuid4().hex
    # A killed cross-filesystem publish, a killed Spark job, and what the earlier two-rename swap left.
    shutil.copyfile(partition / "part-00000.parquet", partition / f".part-00000.parquet.{dead}.tmp")
    spark_leftover = tmp_path / "_staging" / "t" / "date=2026-11-05" / dead / "spark" / "_temporary" / "0"
    spark_leftover.mkdir(parents=True)
    (spark_leftover / "part-00000-x.snappy.parquet").write_bytes(b"torn")
    (tmp_path / "_staging" / "t" / "date=2026-11-05" / f"{uuid.uuid4().hex}.replaced").mkdir()
    assert _what_readers_see(spark, table) == _complete([1])
    write_partition(_frame(spark, [(2, 2.0)]), table, DAY, sort_by=["user_id"])
    assert _files_under(table) == ["date=2026-11-05/part-00000.parquet"]
    assert _files_under(tmp_path / "_staging") == []
    assert sorted(p.name for p in (tmp_path / "_staging" / "t" / "date=2026-11-05").iterdir()) == []


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
