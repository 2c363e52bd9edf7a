"""onlinestore.redis_layout / onlinestore.online_writer against Feast's own encoder, reader and writer, on real Redis."""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import hiredis
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from core.redis_server import project_keys
from onlinestore.online_writer import latest_per_entity, publish_latest, read_offline_latest
from onlinestore.redis_layout import (
    ViewLayout,
    decode_timestamp,
    decode_value,
    encode_entity_key_column,
    encode_timestamp,
    encode_timestamp_column,
    encode_value,
    encode_value_column,
    epoch_nanos,
    feature_field,
    layout_from_feature_view,
    redis_key,
    serialize_entity_key,
    timestamp_field,
)

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
VIEW = "user_stats"
FEATURES = (("txn_count", "int64"), ("amount_mean", "double"), ("top_merchant", "string"), ("is_new", "bool"))
LAYOUT = ViewLayout(VIEW, (("user_id", "int64"),), FEATURES, ttl=timedelta(days=1))
NOW = datetime.now(timezone.utc).replace(microsecond=123456) - timedelta(hours=1)

INT64_VALUES = [0, 1, -1, 127, 128, -128, 300, 2**31 - 1, -(2**31), 2**53 + 1, 2**63 - 1, -(2**63), None]
VALUES_BY_TYPE = {
    "int64": INT64_VALUES,
    "int32": [0, 1, -1, 127, 128, 2**31 - 1, -(2**31), None],
    "double": [0.0, -0.0, 1.5, -2.25, 1e308, 5e-324, math.inf, -math.inf, math.nan, None],
    "float": [0.0, 1.5, -3.0, 0.1, 3.4e38, math.inf, math.nan, None],
    "string": ["", "a", "merchant_42", "ünïcødé ✓ 日本", "x" * 200, "y" * 20000, None],
    "bool": [True, False, None],
}


def _delete_project_keys(client: redis.Redis, project: str) -> None:
    keys = list(project_keys(client, project))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


@pytest.fixture(scope="module")
def client():
    connection = redis.Redis.from_url(REDIS_URL)
    yield connection
    connection.close()


@pytest.fixture
def project(client):
    name = f"fs_test_{uuid.uuid4().hex[:12]}"
    yield name
    _delete_project_keys(client, name)


@pytest.fixture(scope="module")
def feast_store(tmp_path_factory, client):
    """A tiny Feast repo (DuckDB offline store, Redis online store, v3 keys) with one feature view."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig
    from feast.data_format import ParquetFormat
    from feast.types import Bool, Float64, Int64, String
    from feast.value_type import ValueType

    from core.redis_server import feast_connection_string

    repo = tmp_path_factory.mktemp("feast_repo")
    data_dir = repo / "user_stats"
    _write_partition(data_dir, "2026-11-01", _rows([(1, NOW, 1, 1.0, "m", True)]))
    name = f"fs_test_{uuid.uuid4().hex[:12]}"
    config = RepoConfig(
        project=name,
        registry=str(repo / "registry.db"),
        provider="local",
        online_store={"type": "redis", "connection_string": feast_connection_string(REDIS_URL)},
        offline_store={"type": "duckdb"},
        entity_key_serialization_version=3,
        repo_path=str(repo),
    )
    store = FeatureStore(config=config)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name=VIEW,
        entities=[user],
        ttl=LAYOUT.ttl,
        schema=[
            Field(name="user_id", dtype=Int64),
            Field(name="txn_count", dtype=Int64),
            Field(name="amount_mean", dtype=Float64),
            Field(name="top_merchant", dtype=String),
            Field(name="is_new", dtype=Bool),
        ],
        source=FileSource(path=str(data_dir), file_format=ParquetFormat(), timestamp_field="event_timestamp"),
    )
    store.apply([user, view])
    yield store
    _delete_project_keys(client, name)


def _rows(rows: list[tuple]) -> pa.Table:
    """(user_id, event_timestamp, txn_count, amount_mean, top_merchant, is_new) tuples -> arrow table."""
    columns = list(zip(*rows))
    return pa.table(
        {
            "user_id": pa.array(columns[0], pa.int64()),
            "event_timestamp": pa.array(columns[1], pa.timestamp("us", tz="UTC")),
            "txn_count": pa.array(columns[2], pa.int64()),
            "amount_mean": pa.array(columns[3], pa.float64()),
            "top_merchant": pa.array(columns[4], pa.string()),
            "is_new": pa.array(columns[5], pa.bool_()),
        }
    )


def _write_partition(table_dir: Path, day: str, table: pa.Table, name: str = "part-0.parquet") -> None:
    (table_dir / f"date={day}").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, table_dir / f"date={day}" / name)


def _key(project: str, user_id: int) -> bytes:
    return redis_key(project, serialize_entity_key({"user_id": user_id}, {"user_id": "int64"}))


# --- codec == Feast's functions -----------------------------------------------------------------


def test_entity_keys_match_feast():
    from feast.infra.key_encoding_utils import serialize_entity_key as feast_serialize
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    # names out of order on purpose: both sides sort them
    join_key_types = {"user_id": "int64", "merchant": "string", "shard": "int32"}
    rows = [
        {"user_id": user_id, "merchant": merchant, "shard": shard}
        for user_id, merchant, shard in zip(
            [v for v in INT64_VALUES if v is not None], ["", "m1", "ünï ✓", "z" * 300] * 4, [0, -1, 2**31 - 1, -(2**31)] * 4
        )
    ]
    table = pa.table(
        {name: pa.array([row[name] for row in rows], pa.int32() if t == "int32" else None) for name, t in join_key_types.items()}
    )
    ours_columnar = encode_entity_key_column(table, tuple(join_key_types.items())).to_list()
    proto_field = {"int64": "int64_val", "int32": "int32_val", "string": "string_val"}
    for row, columnar in zip(rows, ours_columnar):
        entity_key = EntityKey(
            join_keys=list(row), entity_values=[Value(**{proto_field[join_key_types[k]]: v}) for k, v in row.items()]
        )
        expected = feast_serialize(entity_key, entity_key_serialization_version=3)
        assert serialize_entity_key(row, join_key_types) == expected == columnar
        assert redis_key("proj_ü", expected) == _redis_key("proj_ü", entity_key, entity_key_serialization_version=3)


def test_null_join_key_is_a_clear_error():
    table = pa.table({"user_id": pa.array([1, None, 3], pa.int64())})
    with pytest.raises(ValueError, match="join key 'user_id' is null in row 1"):
        encode_entity_key_column(table, (("user_id", "int64"),))


def test_field_hashes_match_feast():
    from feast.infra.online_stores.helpers import _mmh3

    for view, feature in [(VIEW, "txn_count"), ("v", ""), ("vue_ü", "naïve ✓"), ("merchant_risk", "chargeback_rate_30d")]:
        assert feature_field(view, feature) == _mmh3(f"{view}:{feature}")
    assert timestamp_field(VIEW) == f"_ts:{VIEW}".encode()


@pytest.mark.parametrize("value_type", sorted(VALUES_BY_TYPE))
def test_values_match_feast(value_type):
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    values = VALUES_BY_TYPE[value_type]
    expected = [p.SerializeToString() for p in python_values_to_proto_values(values, ValueType[value_type.upper()])]
    arrow_type = {"int64": pa.int64(), "int32": pa.int32(), "double": pa.float64(), "float": pa.float32()}.get(value_type)
    assert [encode_value(v, value_type) for v in values] == expected
    assert encode_value_column(pa.array(values, arrow_type), value_type).to_list() == expected
    # chunked and sliced input (non-zero array offsets) encode the same
    chunked = pa.chunked_array([pa.array(values[:2], arrow_type), pa.array(values, arrow_type).slice(2)])
    assert encode_value_column(chunked, value_type).to_list() == expected
    for value, encoded in zip(values, expected):
        decoded = decode_value(encoded)
        if encoded:
            parsed = Value.FromString(encoded)
            assert decoded == getattr(parsed, parsed.WhichOneof("val"))
        else:
            assert decoded is None  # null and NaN are written as an empty Value
    assert decode_value(Value(null_val=0).SerializeToString()) is None


def test_timestamps_match_feast():
    from google.protobuf.timestamp_pb2 import Timestamp

    moments = [
        datetime(1970, 1, 1, tzinfo=timezone.utc),
        datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc),
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=timezone.utc),
        datetime(1900, 1, 1, tzinfo=timezone.utc),
        datetime(2026, 11, 3, 12, 0, 0, tzinfo=timezone.utc),
        datetime(2026, 11, 3, 12, 0, 0, 999999, tzinfo=timezone.utc),
        datetime(2262, 4, 11, tzinfo=timezone.utc),
    ]
    column = pa.array(moments, pa.timestamp("us", tz="UTC"))
    nanos = epoch_nanos(column)
    columnar = encode_timestamp_column(nanos).to_list()
    for moment, moment_nanos, encoded in zip(moments, nanos.tolist(), columnar):
        proto = Timestamp()
        proto.FromDatetime(moment)
        expected = proto.SerializeToString()
        assert encode_timestamp(moment_nanos) == expected == encoded
        assert decode_timestamp(expected) == proto.seconds * 1_000_000_000 + proto.nanos
    assert decode_timestamp(None) == 0


def test_layout_from_feature_view(feast_store):
    from feast.value_type import ValueType

    view = feast_store.get_feature_view(VIEW)
    assert layout_from_feature_view(view, {"user_id": ValueType.INT64}) == LAYOUT


# --- Redis round trips with Feast's reader and writer --------------------------------------------


def _online(store, user_ids: list[int]) -> dict:
    features = [f"{VIEW}:{name}" for name, _ in FEATURES]
    return store.get_online_features(features=features, entity_rows=[{"user_id": u} for u in user_ids]).to_dict()


def test_feast_reads_what_we_publish(feast_store, client):
    rows = _rows(
        [
            (1, NOW, 5, 12.5, "m_1", True),
            (2, NOW - timedelta(minutes=5), -7, None, "ünï ✓", False),
            (3, NOW - timedelta(seconds=1), None, float("nan"), None, None),
            (4, NOW, 2**62, -0.5, "", True),
            (1, NOW - timedelta(minutes=1), 999, 999.0, "older", False),  # older row of user 1: not published
        ]
    )
    result = publish_latest(client, feast_store.project, LAYOUT, rows)
    assert (result.entities, result.written, result.skipped_not_newer) == (4, 4, 0)
    online = _online(feast_store, [1, 2, 3, 4, 404])
    assert online["user_id"] == [1, 2, 3, 4, 404]
    assert online["txn_count"] == [5, -7, None, 2**62, None]
    assert online["amount_mean"] == [12.5, None, None, -0.5, None]
    assert online["top_merchant"] == ["m_1", "ünï ✓", None, "", None]
    assert online["is_new"] == [True, False, None, True, None]


def test_same_bytes_as_feasts_writer(feast_store, client):
    rows = _rows(
        [
            (10, NOW, 3, 1.25, "m_3", False),
            (11, NOW - timedelta(days=2, microseconds=7), None, None, None, None),
            (12, datetime(2026, 1, 1, tzinfo=timezone.utc), -(2**63), 1e-300, "日本", True),
        ]
    )
    project = feast_store.project
    keys = [_key(project, user_id) for user_id in (10, 11, 12)]

    feast_store.write_to_online_store(VIEW, df=rows.to_pandas())
    written_by_feast = [client.hgetall(key) for key in keys]
    client.delete(*keys)
    publish_latest(client, project, LAYOUT, rows)
    written_by_us = [client.hgetall(key) for key in keys]

    assert all(written_by_feast) and written_by_us == written_by_feast


def test_older_or_equal_never_overwrites(feast_store, client):
    newer = _rows([(20, NOW, 1, 1.0, "newer", True), (21, NOW, 1, 1.0, "newer", True)])
    mixed = _rows(
        [
            (20, NOW - timedelta(microseconds=1), 2, 2.0, "older", False),  # older: kept out
            (21, NOW + timedelta(microseconds=1), 3, 3.0, "newest", False),  # newer: written
            (22, NOW - timedelta(days=1), 4, 4.0, "first", False),  # new entity: written
        ]
    )
    assert publish_latest(client, feast_store.project, LAYOUT, newer).written == 2
    result = publish_latest(client, feast_store.project, LAYOUT, mixed, batch_size=2)
    assert (result.entities, result.written, result.skipped_not_newer) == (3, 2, 1)
    assert _online(feast_store, [20, 21, 22])["top_merchant"] == ["newer", "newest", "first"]

    # equal event timestamp: Feast skips it ("older OR exact same instant"), and so do we
    equal = _rows([(20, NOW, 9, 9.0, "equal", False)])
    assert publish_latest(client, feast_store.project, LAYOUT, equal).skipped_not_newer == 1
    feast_store.write_to_online_store(VIEW, df=equal.to_pandas())
    assert _online(feast_store, [20])["top_merchant"] == ["newer"]


def test_key_ttl_is_set_when_asked(client, project):
    publish_latest(client, project, LAYOUT, _rows([(30, NOW, 1, 1.0, "m", True)]), key_ttl_seconds=600)
    assert 0 < client.ttl(_key(project, 30)) <= 600


def test_bad_input_names_missing_columns(client, project):
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['is_new'\]"):
        publish_latest(client, project, LAYOUT, _rows([(1, NOW, 1, 1.0, "m", True)]).drop_columns(["is_new"]))


# --- latest per entity ---------------------------------------------------------------------------


def test_latest_per_entity_picks_newest_and_later_row_on_ties():
    rows = _rows(
        [
            (1, NOW - timedelta(hours=1), 1, 0.0, "old", False),
            (1, NOW, 2, 0.0, "tie-first", False),
            (2, NOW, 3, 0.0, "only", False),
            (1, NOW, 4, 0.0, "tie-last", False),
            (1, NOW - timedelta(hours=2), 5, 0.0, "oldest", False),
        ]
    )
    latest = latest_per_entity(rows, ["user_id"]).sort_by("user_id")
    assert latest.column_names == rows.column_names
    assert latest.column("top_merchant").to_pylist() == ["tie-last", "only"]


def test_read_offline_latest_over_partitions(tmp_path):
    day1, day2, day3 = NOW - timedelta(days=2), NOW - timedelta(days=1), NOW
    _write_partition(tmp_path, "2026-11-01", _rows([(1, day1, 1, 0.0, "d1", False), (2, day1, 1, 0.0, "d1", False)]))
    _write_partition(tmp_path, "2026-11-02", _rows([(1, day2, 2, 0.0, "d2", False), (3, day2, 2, 0.0, "d2-a", False)]))
    _write_partition(tmp_path, "2026-11-02", _rows([(3, day2, 2, 0.0, "d2-b", False)]), name="part-1.parquet")
    _write_partition(tmp_path, "2026-11-03", _rows([(2, day3, 3, 0.0, "d3", False)]))

    everything = read_offline_latest(tmp_path, ["user_id"]).sort_by("user_id")
    assert everything.column("top_merchant").to_pylist() == ["d2", "d3", "d2-b"]
    assert "date" not in everything.column_names

    first_two_days = read_offline_latest(tmp_path, ["user_id"], dates=["2026-11-01", "2026-11-02"]).sort_by("user_id")
    assert first_two_days.column("top_merchant").to_pylist() == ["d2", "d1", "d2-b"]
    with pytest.raises(FileNotFoundError, match="2026-12-31"):
        read_offline_latest(tmp_path, ["user_id"], dates=["2026-12-31"])


def test_read_offline_latest_breaks_timestamp_ties_by_created_timestamp(tmp_path):
    """Feast's rule: at equal event timestamps the newest created timestamp wins, whatever the file order."""
    rows = _rows([(1, NOW, 1, 0.0, "created-late", False), (1, NOW, 2, 0.0, "created-early", False),
                  (2, NOW, 3, 0.0, "only", False), (1, NOW - timedelta(hours=1), 4, 0.0, "older", False)])
    created = pa.array([NOW, NOW - timedelta(minutes=5), NOW, NOW + timedelta(days=1)], pa.timestamp("us", tz="UTC"))
    _write_partition(tmp_path, "2026-11-01", rows.append_column("created", created).slice(0, 1))
    _write_partition(tmp_path, "2026-11-02", rows.append_column("created", created).slice(1, 3))
    latest = read_offline_latest(tmp_path, ["user_id"], created_column="created").sort_by("user_id")
    assert latest.column("top_merchant").to_pylist() == ["created-late", "only"]
    # Without a created column the later partition wins the tie.
    assert read_offline_latest(tmp_path, ["user_id"]).sort_by("user_id").column("top_merchant").to_pylist() == ["created-early", "only"]


# --- the two write paths: RESTORE of a new key, HSET of an existing one --------------------------

ALL_TYPES = ViewLayout("all_types", (("user_id", "int64"),), tuple((f"f_{t}", t) for t in VALUES_BY_TYPE))
ARROW_TYPES = {"int64": pa.int64(), "int32": pa.int32(), "double": pa.float64(), "float": pa.float32(),
               "string": pa.string(), "bool": pa.bool_()}
# A float whose serialized Value is b"5" + b"1234": a string Redis would store as an integer, so that
# row cannot be RESTOREd as a plain listpack and must take the HSET path.
INTEGER_LOOKING_FLOAT = struct.unpack("<f", b"1234")[0]


def _all_types_rows(count: int) -> pa.Table:
    columns = {"user_id": pa.array(range(1, count + 1), pa.int64()),
               "event_timestamp": pa.array([NOW - timedelta(seconds=i) for i in range(count)], pa.timestamp("us", tz="UTC"))}
    for value_type, values in VALUES_BY_TYPE.items():
        values = values + [INTEGER_LOOKING_FLOAT] if value_type == "float" else values
        columns[f"f_{value_type}"] = pa.array([values[i % len(values)] for i in range(count)], ARROW_TYPES[value_type])
    return pa.table(columns)


def _restores_that_succeeded(client) -> int:
    stats = client.info("commandstats").get("cmdstat_restore", {})
    return stats.get("calls", 0) - stats.get("failed_calls", 0)


def test_new_and_existing_keys_end_up_with_the_same_hash(client):
    """New keys are RESTOREd from a hash built by us; keys that exist (here: holding another view's
    field) are written with HSET. Both must leave exactly what Feast's HSET leaves, for every value type
    (nulls, NaN, 20 kB strings, a value that looks like an integer), across many pipelined batches."""
    rows = _all_types_rows(60)
    fresh, shared = f"fs_test_{uuid.uuid4().hex[:12]}", f"fs_test_{uuid.uuid4().hex[:12]}"
    other_field = timestamp_field("another_view")
    try:
        for user_id in range(1, 61):
            client.hset(_key(shared, user_id), other_field, b"x")
        restores_before = _restores_that_succeeded(client)
        for project in (fresh, shared):
            result = publish_latest(client, project, ALL_TYPES, rows, batch_size=7, key_ttl_seconds=900)
            assert (result.written, result.skipped_not_newer) == (60, 0)
        # The fresh keys really took the RESTORE path, and Redis accepted our payloads (checksum included).
        assert _restores_that_succeeded(client) - restores_before >= len(_restore_payloads(fresh, ALL_TYPES, rows)) >= 30
        for user_id in range(1, 61):
            restored, updated = client.hgetall(_key(fresh, user_id)), client.hgetall(_key(shared, user_id))
            assert updated.pop(other_field) == b"x"
            assert restored == updated
            assert decode_timestamp(restored[timestamp_field("all_types")]) == epoch_nanos(rows.column("event_timestamp"))[user_id - 1]
            assert 0 < client.ttl(_key(fresh, user_id)) <= 900
        assert client.object("encoding", _key(fresh, 1)) == client.object("encoding", _key(shared, 1))
        expected = {name: [encode_value(v, t) for v in rows.column(name).to_pylist()] for name, t in ALL_TYPES.features}
        for name, value_type in ALL_TYPES.features:
            stored = [client.hget(_key(fresh, user_id), feature_field("all_types", name)) for user_id in range(1, 61)]
            assert stored == expected[name], name
    finally:
        _delete_project_keys(client, fresh)
        _delete_project_keys(client, shared)


def test_a_user_without_restore_still_publishes(client, project):
    """An ACL user that may not RESTORE (or a Redis that cannot) gets the same hashes through HSET."""
    user, password = f"fs_test_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    client.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all", "-restore"])
    try:
        limited = redis.Redis.from_url(REDIS_URL, username=user, password=password)
        result = publish_latest(limited, project, ALL_TYPES, _all_types_rows(25), batch_size=10)
        limited.close()
        assert result.written == 25
        reference = f"fs_test_{uuid.uuid4().hex[:12]}"
        publish_latest(client, reference, ALL_TYPES, _all_types_rows(25))
        assert [client.hgetall(_key(project, u)) for u in range(1, 26)] == [client.hgetall(_key(reference, u)) for u in range(1, 26)]
        _delete_project_keys(client, reference)
    finally:
        client.acl_deluser(user)


# --- our RESTORE payloads as Redis itself writes them ---------------------------------------------


def _restore_payloads(project: str, layout: ViewLayout, rows: pa.Table) -> dict[bytes, bytes]:
    """{key: payload} of the RESTORE commands the writer builds for `rows` (rows it leaves to HSET absent)."""
    from onlinestore import resp_bulk
    from onlinestore.online_writer import _encode_batch

    batch = _encode_batch(rows, project.encode(), layout, "event_timestamp")
    names = layout.feature_fields() + [layout.ts_field]
    field_data, field_offsets = np.frombuffer(b"".join(names), np.uint8), np.cumsum([0] + [len(n) for n in names])
    value_data, value_offsets = batch.flat_values
    out = np.empty(1 << 24, np.uint8)
    used = resp_bulk.build_restores(np.arange(rows.num_rows), batch.keys.data, batch.keys.offsets, field_data, field_offsets,
                                    value_data, value_offsets, 0, resp_bulk.CRC64_TABLE, out, np.zeros(rows.num_rows, dtype=bool))
    reader = hiredis.Reader()
    reader.feed(out[:used].tobytes())
    return {command[1]: command[3] for command in iter(reader.gets, False)}


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    """A redis-server of our own. `sanitize-dump-payload yes`: every RESTORE payload is verified entry by
    entry (the default checks only its header and checksum); `rdbcompression no`: DUMP returns the
    listpack as is (not LZF-compressed), comparable byte for byte with our payload."""
    from core.redis_server import answers, free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("needs redis-server on PATH")
    port, directory = free_port(), tmp_path_factory.mktemp("own-redis")
    process = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory), "--save", "",
                                "--appendonly", "no", "--sanitize-dump-payload", "yes", "--rdbcompression", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        while not answers(url):
            assert process.poll() is None, "redis-server exited at start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _with_element_count(payload: bytes, delta: int) -> bytes:
    """The payload with its listpack's element count changed and its CRC64 recomputed (passes the
    checksum, fails a full verification)."""
    from onlinestore import resp_bulk

    length_size = {0: 1, 1: 2}.get(payload[1] >> 6, 5)
    count_at = 1 + length_size + 4
    body = bytearray(payload[:-8])
    body[count_at:count_at + 2] = (int.from_bytes(body[count_at:count_at + 2], "little") + delta).to_bytes(2, "little")
    data = np.frombuffer(bytes(body), np.uint8)
    return bytes(body) + int(resp_bulk.crc64(resp_bulk.CRC64_TABLE, data, 0, len(data))).to_bytes(8, "little")


def test_a_redis_that_verifies_every_restore_payload_accepts_ours(own_redis):
    sanitizing = redis.Redis.from_url(own_redis)
    assert sanitizing.config_get("sanitize-dump-payload") == {"sanitize-dump-payload": "yes"}
    rows = _all_types_rows(120)
    result = publish_latest(sanitizing, "fs_restored", ALL_TYPES, rows, batch_size=25, key_ttl_seconds=900)
    assert result.written == 120
    stats = sanitizing.info("commandstats")["cmdstat_restore"]
    assert stats["failed_calls"] == 0 and stats["calls"] == len(_restore_payloads("fs_restored", ALL_TYPES, rows)) >= 60
    publish_latest(sanitizing, "fs_hset", ALL_TYPES, rows, write_mode="hset")
    assert sanitizing.info("commandstats")["cmdstat_restore"]["calls"] == stats["calls"]  # hset: no RESTORE at all
    for user_id in range(1, 121):
        restored, written = _key("fs_restored", user_id), _key("fs_hset", user_id)
        assert sanitizing.hgetall(restored) == sanitizing.hgetall(written)
        assert sanitizing.object("encoding", restored) == sanitizing.object("encoding", written)
    # ...and it does verify: a listpack whose element count lies (checksum fixed up) is refused.
    payload = next(iter(_restore_payloads("fs_corrupt", ALL_TYPES, rows.slice(0, 1)).values()))
    sanitizing.restore(b"fs_intact", 0, payload)
    with pytest.raises(redis.ResponseError, match="Bad data format"):
        sanitizing.restore(b"fs_corrupt", 0, _with_element_count(payload, 2))
    sanitizing.close()


def test_restore_payload_equals_redis_own_dump_of_the_hash_hset_builds(own_redis):
    """Redis builds the hash with HSET (field by field, its own listpack encoder); its DUMP of that key
    is byte for byte the payload we RESTORE: same RDB type, listpack, RDB version and CRC64."""
    client, project = redis.Redis.from_url(own_redis), "fs_dump"
    rows = _all_types_rows(60)
    payloads = _restore_payloads(project, ALL_TYPES, rows)
    assert len(payloads) >= 30  # rows with an integer-looking or a long value are left to HSET
    publish_latest(client, project, ALL_TYPES, rows, write_mode="hset")
    for key, payload in payloads.items():
        assert client.object("encoding", key) == b"listpack"
        dump = client.dump(key)
        assert dump[:-10] == payload[:-10], key  # RDB type, length and the listpack
        assert dump == payload, key  # RDB version (Redis 7.0: 10) and CRC64 too
    client.close()
