"""The same Spark pipelines on a real Spark standalone cluster (master + 2 workers from the pyspark
install, on 127.0.0.1, started by infra/local/spark-standalone.sh) write exactly what local mode writes.

The cluster driver runs in a subprocess (one SparkContext per process; the suite's local session lives
in this one). Started once for the module, stopped after."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timedelta

import pyarrow.parquet as pq
import pytest

from cluster_support import PROJECT_ROOT, SparkStandalone, run_pipelines
from pipelines.generator import generate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = date(2026, 11, 1)
DAYS = [START + timedelta(days=offset) for offset in range(2)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    standalone = SparkStandalone.start(tmp_path_factory.mktemp("spark-standalone"), workers=2, cores=1, memory="1g")
    yield standalone
    standalone.stop()


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    path = tmp_path_factory.mktemp("cluster-landing")
    generate(path, START, len(DAYS), 600, seed=5)
    return path


def run_on_cluster(master: str, landing, out, days, timeout: int = 240) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
                   "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "tests")])}
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "tests" / "cluster_support.py"), "pipelines", master, str(landing), str(out),
         *[d.isoformat() for d in days]],
        env=environment, capture_output=True, text=True, timeout=timeout,
    )


def test_cluster_writes_exactly_what_local_mode_writes(cluster, landing, spark, tmp_path):
    done = run_on_cluster(cluster.master_url, landing, tmp_path / "cluster", DAYS)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "executors=2" in done.stdout, done.stdout + done.stderr[-2000:]
    # The work really ran on both workers: each launched an executor for the app.
    executor_dirs = list((cluster.directory / "work").glob("app-*/*"))
    assert len(executor_dirs) >= 2, executor_dirs

    local = run_pipelines(spark, landing, tmp_path / "local", DAYS)
    assert set(local) == {"raw/users", "raw/merchants", "raw/transactions", "raw/chargebacks",
                          "offline/user_velocity", "offline/merchant_risk"}
    for table, paths in local.items():
        for local_file in paths:
            cluster_file = tmp_path / "cluster" / local_file.relative_to(tmp_path / "local")
            expected, actual = pq.read_table(local_file), pq.read_table(cluster_file)
            assert expected.num_rows > 0 or table.startswith("raw/chargebacks"), f"{table}: nothing written"
            assert actual.schema == expected.schema, f"{cluster_file}: schema differs"
            assert actual.equals(expected), f"{cluster_file}: contents differ from local mode"
