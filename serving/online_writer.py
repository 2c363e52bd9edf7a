"""Publish the latest feature values per entity into Redis, in exactly Feast's online layout.

Same bytes and same rules as Feast's RedisOnlineStore.online_write_batch, about two orders of magnitude
faster: values are encoded column-wise with numpy (serving.redis_layout) and each batch's HMGET/HSET
commands are built as one RESP buffer, so there is no Python work per value and little per entity.

Feast's monotonic rule, mirrored here: a row is written only when no event timestamp is stored for the
entity yet, or its event timestamp is strictly newer than the stored one (equal -> skipped).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import redis

from serving.resp import send_packed
from serving.redis_layout import (
    Ragged,
    ViewLayout,
    concat_rows,
    decode_timestamp,
    encode_entity_key_column,
    encode_timestamp_column,
    encode_value_column,
    epoch_nanos,
)

_ROW_ORDER = "__featurestack_row"


@dataclass(frozen=True)
class PublishResult:
    entities: int  # distinct entities in the input
    written: int
    skipped_not_newer: int  # Redis already held an equal or newer event timestamp
    seconds: float


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _latest_sql(source: str, join_keys: list[str], timestamp_column: str, tie_break: list[str], columns: str) -> str:
    partition = ", ".join(_quoted(k) for k in join_keys)
    order = ", ".join([f"{_quoted(timestamp_column)} DESC"] + [f"{c} DESC" for c in tie_break])
    return f"SELECT {columns} FROM {source} QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY {order}) = 1"


def latest_per_entity(table: pa.Table, join_keys: list[str], timestamp_column: str = "event_timestamp") -> pa.Table:
    """One row per entity: the one with the newest timestamp; on a tie, the later row of `table` wins."""
    numbered = table.append_column(_ROW_ORDER, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    connection = duckdb.connect()
    try:
        connection.register("rows", numbered)
        sql = _latest_sql("rows", join_keys, timestamp_column, [_ROW_ORDER], f"* EXCLUDE ({_ROW_ORDER})")
        return connection.sql(sql).to_arrow_table()
    finally:
        connection.close()


def read_offline_latest(
    table_dir: Path, join_keys: list[str], dates: list[str] | None = None, timestamp_column: str = "event_timestamp"
) -> pa.Table:
    """Latest row per entity of a date-partitioned parquet table ({table_dir}/date=YYYY-MM-DD/*.parquet),
    optionally of the given dates only. DuckDB streams the files; on a timestamp tie the later
    partition/file/row wins."""
    table_dir = Path(table_dir)
    if dates is None:
        paths = [str(table_dir / "date=*" / "*.parquet")]
    else:
        paths = [str(table_dir / f"date={d}" / "*.parquet") for d in dates]
        paths = [p for p, d in zip(paths, dates) if (table_dir / f"date={d}").is_dir()]
        if not paths:
            raise FileNotFoundError(f"{table_dir}: none of the partitions {dates} exists")
    source = "read_parquet($paths, hive_partitioning = false, filename = true, file_row_number = true)"
    sql = _latest_sql(source, join_keys, timestamp_column, ["filename", "file_row_number"], "* EXCLUDE (filename, file_row_number)")
    connection = duckdb.connect()
    try:
        return connection.sql(sql, params={"paths": paths}).to_arrow_table()
    finally:
        connection.close()


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _bulk_rows(values: Ragged) -> list[Ragged | bytes]:
    """RESP bulk strings of each row: $<len>\r\n<bytes>\r\n."""
    return [b"$", _decimal_rows(values.lengths), b"\r\n", values, b"\r\n"]


def _decimal_rows(numbers: np.ndarray) -> Ragged:
    """ASCII decimal of each non-negative int."""
    numbers = numbers.astype(np.int64)
    digits = 1 + sum((numbers >= 10**k).astype(np.int64) for k in range(1, 19))
    width = int(digits.max(initial=1))
    matrix = np.empty((len(numbers), width), dtype=np.uint8)
    for position in range(width):  # position 0 = most significant digit of the widest number
        power = np.int64(10) ** np.maximum(digits - 1 - position, 0)
        matrix[:, position] = ord("0") + (numbers // power) % 10
    return Ragged.from_rows(matrix, digits)


def _commands(name: bytes, keys: Ragged, args: list[Ragged | bytes]) -> bytes:
    """One RESP command per row: NAME key args... (a bytes arg is the same in every row)."""
    parts: list[Ragged | bytes] = [b"*%d\r\n" % (2 + len(args)) + _bulk(name)]
    parts += _bulk_rows(keys)
    for arg in args:
        parts += [_bulk(arg)] if isinstance(arg, bytes) else _bulk_rows(arg)
    return concat_rows(parts, len(keys)).to_bytes()


def _is_plain_redis(client) -> bool:
    # The raw-socket fast path needs one connection pool to one server; a RedisCluster (or any other
    # client) gets the standard, slot-routing pipeline with the same commands.
    return isinstance(client, redis.Redis)


def _send_rows(client, name: bytes, keys: Ragged, args: list[Ragged | bytes]) -> list:
    """`name key args...` for every row of `keys`: pre-encoded RESP on a plain client, else a
    non-transactional pipeline (a cluster pipeline splits it by hash slot)."""
    if _is_plain_redis(client):
        return send_packed(client, _commands(name, keys, args), len(keys))
    columns = [arg.to_list() if isinstance(arg, Ragged) else [arg] * len(keys) for arg in args]
    pipe = client.pipeline(transaction=False)
    for key, *row in zip(keys.to_list(), *columns):
        pipe.execute_command(name.decode(), key, *row)
    replies = pipe.execute(raise_on_error=False)
    errors = [reply for reply in replies if isinstance(reply, Exception)]
    if errors:
        raise redis.ResponseError(f"{len(errors)} of {len(keys)} commands failed, first: {errors[0]}")
    return replies


def publish_latest(
    client: redis.Redis,
    project: str,
    layout: ViewLayout,
    table: pa.Table,
    batch_size: int = 10_000,
    key_ttl_seconds: int | None = None,
    timestamp_column: str = "event_timestamp",
) -> PublishResult:
    """Write the newest row per entity of `table` (join keys, features, timestamp column) to Redis
    (`client`: redis.Redis, or redis.cluster.RedisCluster for a Redis Cluster).
    `key_ttl_seconds` mirrors the Feast repo's online_store.key_ttl_seconds (EXPIRE after each write)."""
    started = time.perf_counter()
    join_key_names = [name for name, _ in layout.join_keys]
    missing = [c for c in join_key_names + [f for f, _ in layout.features] + [timestamp_column] if c not in table.column_names]
    if missing:
        raise ValueError(f"view {layout.name}: input table lacks column(s) {missing}")
    latest = latest_per_entity(table, join_key_names, timestamp_column)
    ts_field = layout.ts_field
    feature_fields = layout.feature_fields()
    written = 0
    for start in range(0, latest.num_rows, batch_size):
        batch = latest.slice(start, batch_size)
        keys = concat_rows([encode_entity_key_column(batch, layout.join_keys), project.encode()], batch.num_rows)
        stored = _send_rows(client, b"HMGET", keys, [ts_field])
        stored_nanos = np.array([decode_timestamp(reply[0]) for reply in stored], dtype=np.int64)
        new_nanos = epoch_nanos(batch.column(timestamp_column)) // 1000 * 1000  # Feast keeps microseconds
        rows = np.flatnonzero((stored_nanos == 0) | (new_nanos > stored_nanos))
        if len(rows) == 0:
            continue
        if len(rows) < batch.num_rows:
            batch, keys, new_nanos = batch.take(rows), keys.take(rows), new_nanos[rows]
        hset_args: list[Ragged | bytes] = []
        for field, (feature, value_type) in zip(feature_fields, layout.features):
            hset_args += [field, encode_value_column(batch.column(feature), value_type)]
        hset_args += [ts_field, encode_timestamp_column(new_nanos)]
        if _is_plain_redis(client):
            commands = _commands(b"HSET", keys, hset_args)
            replies = len(rows)
            if key_ttl_seconds:
                commands += _commands(b"EXPIRE", keys, [b"%d" % key_ttl_seconds])
                replies *= 2
            send_packed(client, commands, replies)
        else:
            _send_rows(client, b"HSET", keys, hset_args)
            if key_ttl_seconds:
                _send_rows(client, b"EXPIRE", keys, [b"%d" % key_ttl_seconds])
        written += len(rows)
    return PublishResult(
        entities=latest.num_rows,
        written=written,
        skipped_not_newer=latest.num_rows - written,
        seconds=time.perf_counter() - started,
    )
