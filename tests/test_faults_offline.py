"""A Spark job killed (SIGKILL, driver JVM included) in the middle of writing a partition leaves the
partition with the old or the new complete contents, never a mix and never a torn file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import date

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from cluster_support import PROJECT_ROOT, WRITE_LOOP_ROWS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_spark_killed_mid_write_leaves_old_or_new_partition(spark, tmp_path):
    table_dir = tmp_path / "offline" / "loop_table"
    partition = table_dir / "date=2026-11-01"
    attempts = tmp_path / "offline" / "_staging" / "loop_table" / "date=2026-11-01"
    log = open(tmp_path / "writer.log", "w")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "tests")])}
    writer = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "tests" / "cluster_support.py"), "write-loop", str(table_dir)],
        stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True,
    )
    try:
        _wait_for(lambda: (partition / "part-00000.parquet").exists(), 180, "the first complete write")
        # A later write is under way once its attempt's staging folder exists (the partition's staging
        # folder itself stays between writes): kill inside it.
        _wait_for(lambda: attempts.exists() and any(attempts.iterdir()), 60, "the second write to start")
        time.sleep(random.uniform(0.0, 0.5))
        os.killpg(writer.pid, signal.SIGKILL)  # the Python driver and its JVM
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            os.killpg(writer.pid, signal.SIGKILL)
        log.close()
    written = (tmp_path / "writer.log").read_text().count("wrote ")

    files = sorted(partition.iterdir())
    assert [f.name for f in files] == ["part-00000.parquet"], files  # no torn or extra file in the table
    table = pq.read_table(partition / "part-00000.parquet")
    labels = set(table.column("label").to_pylist())
    assert len(labels) == 1, f"a mix of contents: {labels}"
    assert table.num_rows == WRITE_LOOP_ROWS
    assert table.column("id").to_pylist() == list(range(WRITE_LOOP_ROWS))
    assert pc.sum(table.column("value")).as_py() == sum(i * 7 % 1000 for i in range(WRITE_LOOP_ROWS))
    # Old or new: the last reported write, or the one killed between its publish and its report.
    assert labels <= {"ab"[(written - 1) % 2], "ab"[written % 2]}, (labels, written)
    # The killed attempt left its files in staging only; the next write of the partition removes them.
    from pipelines.offline_store import write_partition

    write_partition(spark.range(3).select("id", F.lit("c").alias("label"), F.col("id").alias("value")), table_dir, date(2026, 11, 1), sort_by=["id"])
    assert [f.name for f in partition.iterdir()] == ["part-00000.parquet"]
    assert pq.read_table(partition / "part-00000.parquet").column("label").to_pylist() == ["c"] * 3
    assert [p for p in attempts.rglob("*")] == []
    print(f"fault: SIGKILL during write #{written + 1} -> partition holds one complete write ({labels.pop()!r}), {written} reported")
