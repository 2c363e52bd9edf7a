"""Publishing with Spark (the `spark` profile, a cluster by configuration): Spark finds the newest row
per entity, then every partition is written by its executor through mapInArrow with the same encoder
and streamed, pipelined writer as the local path (onlinestore.online_writer.publish_latest), so a cluster
spreads the encoding and each executor keeps its Redis connection busy. Same rules, same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.lake import partition_dir
from onlinestore.online_writer import PublishResult
from onlinestore.redis_layout import ViewLayout

_FILE, _ROW = "__featurestack_file", "__featurestack_row"


def read_offline_latest_spark(
    spark: SparkSession,
    table_dir: Path,
    join_keys: list[str],
    dates: list[str] | None = None,
    timestamp_column: str = "event_timestamp",
    created_column: str | None = None,
) -> DataFrame:
    """onlinestore.online_writer.read_offline_latest in Spark: the newest event timestamp per entity, ties
    broken by `created_column`, then the later partition/file/row. A hash aggregate (max_by over an
    ordering struct), not a window: no sort of the whole table."""
    table_dir = Path(table_dir)
    paths = [str(partition_dir(table_dir, d)) for d in dates] if dates is not None else [str(table_dir)]
    paths = [p for p in paths if Path(p).is_dir()]
    if not paths:
        raise FileNotFoundError(f"{table_dir}: none of the partitions {dates} exists")
    rows = spark.read.option("basePath", str(table_dir)).parquet(*paths)
    values = [c for c in rows.columns if c not in join_keys and c != "date"]
    rows = rows.select(*join_keys, *values, F.col("_metadata.file_path").alias(_FILE), F.col("_metadata.row_index").alias(_ROW))
    order = [timestamp_column] + ([created_column] if created_column else []) + [_FILE, _ROW]
    latest = rows.groupBy(*join_keys).agg(F.max_by(F.struct(*values), F.struct(*order)).alias("latest"))
    return latest.select(*join_keys, *[F.col(f"latest.{name}").alias(name) for name in values])


def publish_latest_spark(
    latest: DataFrame,
    redis_url: str,
    redis_type: str,
    project: str,
    layout: ViewLayout,
    key_ttl_seconds: int | None = None,
    batch_size: int = 20_000,
    timestamp_column: str = "event_timestamp",
    write_mode: str = "auto",
) -> PublishResult:
    """Write `latest` (one row per entity) to Redis from the executors: each opens its own client for
    `redis_url` and publishes its partition's arrow batches. Returns the totals."""

    started = time.perf_counter()
    columns = [name for name, _ in layout.join_keys] + [name for name, _ in layout.features] + [timestamp_column]

    def write_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from core.redis_server import redis_client
        from onlinestore.online_writer import publish_latest

        client = redis_client(redis_url, redis_type, socket_timeout=30, socket_connect_timeout=10)
        try:
            for batch in batches:
                result = publish_latest(client, project, layout, pa.Table.from_batches([batch]), batch_size,
                                        key_ttl_seconds, timestamp_column, write_mode)
                yield pa.RecordBatch.from_pydict({"entities": [result.entities], "written": [result.written]})
        finally:
            client.close()

    totals = (latest.select(*columns).mapInArrow(write_partition, "entities long, written long")
              .agg(F.sum("entities").alias("entities"), F.sum("written").alias("written")).collect()[0])
    entities, written = int(totals["entities"] or 0), int(totals["written"] or 0)
    return PublishResult(entities=entities, written=written, skipped_not_newer=entities - written,
                         seconds=time.perf_counter() - started)
