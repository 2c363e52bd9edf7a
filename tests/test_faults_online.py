"""Faults on the online path: Redis killed during a publish, and backfills arriving out of order.
Nothing is lost and no older value ever overwrites a newer one."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from cluster_support import OwnRedis, free_port
from support import delete_project_keys
from onlinestore.online_writer import publish_latest, read_offline_latest
from onlinestore.redis_layout import ViewLayout, decode_timestamp, decode_value, feature_field, redis_key, serialize_entity_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VIEW = "user_stats"
LAYOUT = ViewLayout(VIEW, (("user_id", "int64"),), (("txn_count", "int64"), ("label", "string")))
T0 = datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
LABEL_FIELD = feature_field(VIEW, "label")


def _rows(user_ids, stamps, label: str) -> pa.Table:
    ids = np.asarray(list(user_ids), dtype=np.int64)
    return pa.table({
        "user_id": pa.array(ids),
        "event_timestamp": pa.array(stamps if isinstance(stamps, list) else [stamps] * len(ids), pa.timestamp("us", tz="UTC")),
        "txn_count": pa.array(ids + 1),
        "label": pa.array([f"{label}_{i}" for i in ids.tolist()]),
    })


def _write_day(table_dir, day: str, table: pa.Table) -> None:
    (table_dir / f"date={day}").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, table_dir / f"date={day}" / "part-00000.parquet")


def _online(client: redis.Redis, project: str, user_ids) -> dict[int, tuple[str | None, int]]:
    """user_id -> (label, event timestamp in epoch micros) as stored in Feast's layout."""
    pipe = client.pipeline(transaction=False)
    for user_id in user_ids:
        pipe.hmget(redis_key(project, serialize_entity_key({"user_id": user_id}, {"user_id": "int64"})), [LABEL_FIELD, LAYOUT.ts_field])
    return {u: (decode_value(label), decode_timestamp(ts) // 1000) for u, (label, ts) in zip(user_ids, pipe.execute())}


def _expected(latest: pa.Table) -> dict[int, tuple[str, int]]:
    stamps = latest.column("event_timestamp").cast(pa.int64()).to_pylist()
    return dict(zip(latest.column("user_id").to_pylist(), zip(latest.column("label").to_pylist(), stamps)))


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_redis_killed_during_publish_then_rerun_converges(tmp_path):
    entities = 150_000
    server = OwnRedis(free_port(), tmp_path / "redis").start()
    project = "fs_fault"
    table_dir = tmp_path / "offline" / VIEW
    # Offline: 1/10 of the users already have a NEWER value online than the partition being published.
    ahead = range(0, entities, 10)
    _write_day(table_dir, "2026-11-02", _rows(range(entities), T0, "day2"))
    latest = read_offline_latest(table_dir, ["user_id"], dates=["2026-11-02"])
    client = redis.Redis.from_url(server.url, socket_timeout=5)
    try:
        publish_latest(client, project, LAYOUT, _rows(ahead, T0 + timedelta(hours=1), "newer"))

        watcher = redis.Redis.from_url(server.url)
        killed = threading.Event()

        def kill_mid_publish():
            while watcher.dbsize() < len(ahead) + 5_000:  # some batches of the publish are in
                time.sleep(0.002)
            server.kill()
            killed.set()

        thread = threading.Thread(target=kill_mid_publish, daemon=True)
        thread.start()
        with pytest.raises(redis.ConnectionError) as failure:
            publish_latest(client, project, LAYOUT, latest, batch_size=500)
        thread.join(timeout=10)
        assert killed.is_set(), "the publish finished before Redis was killed"
        print(f"fault: redis SIGKILL mid-publish -> {type(failure.value).__name__}: {failure.value}")
        client.close()

        # Redis comes back (AOF with appendfsync always keeps every acknowledged write): partial state.
        server.start()
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        partial = _online(client, project, range(entities))
        published_before_kill = sum(1 for label, _ in partial.values() if label and label.startswith("day2"))
        assert 0 < published_before_kill < entities - len(ahead)
        assert all(partial[u][0] == f"newer_{u}" for u in ahead), "a newer value was overwritten mid-publish"

        rerun = publish_latest(client, project, LAYOUT, latest, batch_size=5_000)
        assert rerun.entities == entities
        assert rerun.written == entities - len(ahead) - published_before_kill
        online = _online(client, project, range(entities))
        expected = _expected(latest)
        newer_micros = int(pa.scalar(T0 + timedelta(hours=1), pa.timestamp("us", tz="UTC")).cast(pa.int64()).as_py())
        for user_id in ahead:
            expected[user_id] = (f"newer_{user_id}", newer_micros)
        assert online == expected  # converged: the offline latest everywhere, except the newer ones kept
    finally:
        client.close()
        server.kill()


def test_backfill_of_an_older_day_keeps_the_newest_online_values(redis_url, tmp_path):
    project = f"fs_backfill_{uuid.uuid4().hex[:8]}"
    table_dir = tmp_path / "offline" / VIEW
    users = range(1, 201)
    _write_day(table_dir, "2026-11-01", _rows(users, T0 - timedelta(days=1), "day1"))
    _write_day(table_dir, "2026-11-02", _rows(users, T0, "day2"))
    _write_day(table_dir, "2026-11-03", _rows(range(101, 301), T0 + timedelta(days=1), "day3"))
    client = redis.Redis.from_url(redis_url)
    try:
        publish = lambda day: publish_latest(client, project, LAYOUT, read_offline_latest(table_dir, ["user_id"], dates=[day]))
        assert publish("2026-11-03").written == 200
        assert publish("2026-11-02").written == 100  # only users 1..100, which day 3 lacks
        assert publish("2026-11-01").written == 0  # the old day backfilled last changes nothing
        assert publish("2026-11-03").written == 0  # a duplicate partition changes nothing
        assert publish("2026-11-02").written == 0
        everything = _expected(read_offline_latest(table_dir, ["user_id"]))
        assert _online(client, project, range(1, 301)) == everything
        assert {label.split("_")[0] for label, _ in everything.values()} == {"day2", "day3"}
    finally:
        client.close()
        delete_project_keys(redis_url, project)
