"""Helpers of the cluster and fault tests (test_cluster_*.py, test_faults_*.py): a Spark standalone
cluster from infra/local/spark-standalone.sh, own redis-server processes, and the whole Spark part of
the platform (landing -> raw -> features -> offline store) as one function that runs the same in local
mode and on a cluster. Spark allows one SparkContext per process, so a cluster session runs in a
subprocess: `python tests/cluster_support.py pipelines MASTER LANDING OUT DAY...`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from core.redis_server import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SPARK_SCRIPT = PROJECT_ROOT / "infra" / "local" / "spark-standalone.sh"


def free_cluster_port() -> int:
    """A free port p <= 55535 whose cluster bus port p + 10000 is free too (Redis Cluster needs both)."""
    import random

    for _ in range(200):
        port = random.randint(20_000, 45_000)
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 10_000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a Redis Cluster node")


# ---------------------------------------------------------------------------------------------------
# Spark standalone


@dataclass
class SparkStandalone:
    master_url: str
    directory: Path
    environment: dict[str, str]

    @classmethod
    def start(cls, directory: Path, workers: int = 2, cores: int = 1, memory: str = "1g") -> SparkStandalone:
        port = free_port()
        environment = {
            **os.environ,
            "SPARK_MASTER_PORT": str(port),
            "SPARK_MASTER_WEBUI_PORT": str(free_port()),
            "SPARK_WORKER_CORES": str(cores),
            "SPARK_WORKER_MEMORY": memory,
            "SPARK_STANDALONE_DIR": str(directory),
            "SPARK_STANDALONE_PYTHON": sys.executable,
        }
        cluster = cls(f"spark://127.0.0.1:{port}", directory, environment)
        done = subprocess.run([str(SPARK_SCRIPT), "start", str(workers)], env=environment, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            cluster.stop()
            raise RuntimeError(f"spark-standalone.sh start failed:\n{done.stdout}\n{done.stderr}")
        return cluster

    def stop(self) -> None:
        subprocess.run([str(SPARK_SCRIPT), "stop"], env=self.environment, capture_output=True, timeout=60)


# ---------------------------------------------------------------------------------------------------
# redis-server processes of our own


@dataclass
class OwnRedis:
    port: int
    directory: Path
    process: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> OwnRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.directory), "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--logfile", str(self.directory / "redis.log"), *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, timeout_s=45)
        except TimeoutError:
            log = self.directory / "redis.log"
            raise TimeoutError(f"redis-server on {self.port} did not start (exit {self.process.poll()}): "
                               f"{log.read_text()[-2000:] if log.exists() else 'no log'}") from None
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save (the AOF keeps what was acknowledged)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def wait_for_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------
# The Spark part of the platform, as the assets run it


def run_pipelines(spark, landing: Path, out: Path, days: list[date]) -> dict[str, list[Path]]:
    """landing -> raw (contract split) for `days`, then every feature pipeline -> offline store for the
    last day (its look-back reads the earlier raw days), as the assets run them. Returns the written
    files per table."""
    from assets.partitions import lookback_dates
    from pipelines.offline_store import read_partitions, write_partition, write_table
    from pipelines.raw import CONTRACTS, split_valid_and_quarantined
    from core.feast_repo import load_repo_contents
    from core.settings import load_settings
    from pipelines.registry import RAW_DIMENSION_TABLES, RAW_PARTITIONED_TABLES, pipeline_for_view

    written: dict[str, list[Path]] = {}
    raw_dir = out / "raw"
    for table in RAW_DIMENSION_TABLES:
        valid, _ = split_valid_and_quarantined(spark.read.parquet(str(landing / table)), CONTRACTS[table], None)
        written.setdefault(f"raw/{table}", []).append(write_table(valid, raw_dir / table, CONTRACTS[table].order_by).path)
    for day in days:
        for table in RAW_PARTITIONED_TABLES:
            contract = CONTRACTS[table]
            landing_day = spark.read.parquet(str(landing / table / f"date={day.isoformat()}"))
            references = {  # what the contract's referential rules check against, as the raw asset reads it
                rule.table: spark.read.parquet(str(raw_dir / rule.table / (f"date={day.isoformat()}" if rule.table in RAW_PARTITIONED_TABLES else "")))
                for rule in contract.references
            }
            valid, _ = split_valid_and_quarantined(landing_day, contract, day, references)
            written.setdefault(f"raw/{table}", []).append(write_partition(valid, raw_dir / table, day, contract.order_by).path)
    settings = load_settings()
    repo = load_repo_contents(settings)
    join_key_of = {entity.name: entity.join_key for entity in repo.entities}
    for view in repo.feature_views:
        name, join_keys = view.name, [join_key_of[entity] for entity in view.entities]
        pipeline = pipeline_for_view(view, join_keys, settings.feature_repo_dir)
        for day in days[-1:]:
            tables = {
                table: read_partitions(spark, raw_dir / table, lookback_dates(day, back)) if table in RAW_PARTITIONED_TABLES
                else spark.read.parquet(str(raw_dir / table))
                for table, back in pipeline.inputs.items()
            }
            result = write_partition(pipeline.build(tables, day), out / "offline" / name, day, sort_by=[*join_keys, "event_timestamp"])
            written.setdefault(f"offline/{name}", []).append(result.path)
    return written


WRITE_LOOP_ROWS = 400_000


def write_loop(table_dir: Path) -> None:
    """Rewrite one partition forever, alternating complete contents 'a' and 'b' (the fault test kills it)."""
    from pyspark.sql import functions as F

    from pipelines.offline_store import write_partition
    from pipelines.spark import build_spark_session

    spark = build_spark_session(master="local[1]", driver_memory="1g", shuffle_partitions=1, app_name="featurestack-write-loop")
    for iteration in range(1_000_000):
        label = "ab"[iteration % 2]
        frame = spark.range(WRITE_LOOP_ROWS).select(F.col("id"), F.lit(label).alias("label"), (F.col("id") * 7 % 1000).alias("value"))
        write_partition(frame, table_dir, date(2026, 11, 1), sort_by=["id"])
        print(f"wrote {label}", flush=True)


def _main(argv: list[str]) -> int:
    sys.path.insert(0, str(PROJECT_ROOT))
    if argv[0] == "write-loop":
        write_loop(Path(argv[1]))
        return 0
    command, master, landing, out, *days = argv
    if command != "pipelines":
        raise SystemExit(f"unknown command {command}")
    from pipelines.spark import build_spark_session

    spark = build_spark_session(
        master=master, driver_memory="1g", shuffle_partitions=2, app_name="featurestack-cluster-test",
        extra_conf={"spark.executor.memory": "768m", "spark.executor.cores": "1", "spark.cores.max": "2"},
    )
    try:
        run_pipelines(spark, Path(landing), Path(out), [date.fromisoformat(d) for d in days])
        executors = len(spark.sparkContext.statusTracker().getExecutorInfos()) - 1  # minus the driver
        print(f"executors={executors}", flush=True)
    finally:
        spark.stop()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
