"""Shared by the stream processor tests (Redis Streams and NATS JetStream logs): generated events with
planted bad ones, a processor, draining a log, reading what a project holds online."""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import redis

from core.redis_server import project_keys
from eventlog.events import MalformedEvent, encode_record, parse_event, partition_of
from eventlog.redis_streams import RedisEventLog
from onlinestore.online_reader import OnlineFeatureReader
from streaming.aggregator import WindowAggregator
from streaming.processor import StreamProcessor

PARTITIONS = 4
START = datetime(2026, 11, 10, tzinfo=timezone.utc)


def make_records(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    clock = {user: START + timedelta(seconds=rng.randrange(86_400)) for user in range(1, 60)}
    records = []
    for n in range(count):
        user = rng.randrange(1, 60)
        clock[user] += timedelta(microseconds=rng.choice([0, 1, rng.randrange(10**6), rng.randrange(10**10)]))
        records.append({"txn_id": f"t{n}", "user_id": user, "merchant_id": rng.randrange(1, 9),
                        "amount": round(rng.uniform(0.5, 400), 2), "event_timestamp": clock[user]})
    return records


def make_entries(spec, records) -> list[dict]:
    entries = [encode_record(record) for record in records]
    entries.insert(50, dict(entries[10]))  # a re-delivered event
    entries.insert(100, {"txn_id": "bad-1", "merchant_id": "3", "amount": "5.0", "event_timestamp": "2026-11-10T01:00:00Z"})
    entries.insert(150, {**entries[5], "txn_id": "bad-2", "amount": "a lot"})
    entries.insert(200, {**entries[6], "txn_id": "bad-3", "event_timestamp": "yesterday"})
    # Far older than user 1's newest event minus the largest window: too late.
    entries.append({**encode_record({**records[0], "txn_id": "late-1", "user_id": 1}),
                    "event_timestamp": "2026-10-01T00:00:00.000000Z"})
    return entries


def make_processor(url, project, velocity, name=None, batch=200, log=None) -> StreamProcessor:
    spec, layout = velocity
    return StreamProcessor(redis.Redis.from_url(url), project, spec, layout, PARTITIONS, batch_events=batch, block_ms=5, name=name,
                           log=log)


def drain(processor: StreamProcessor, log: RedisEventLog, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processor.step()
        if len(processor.held) == PARTITIONS and not any(log.lag().values()):
            return
    raise AssertionError(f"log not drained: lag {log.lag()}")


def online_state(url: str, project: str) -> dict:
    client = redis.Redis.from_url(url)
    state = {key[: -len(project)]: client.hgetall(key) for key in project_keys(client, project)}
    client.close()
    return state


def run_in_child(url, project, velocity):
    processor = make_processor(url, project, velocity, name="child", batch=50)
    processor.run(threading.Event())


def assert_rows_equal_the_aggregator(redis_url, project, velocity, entries) -> None:
    """What Redis holds is the newest row per user of an aggregator fed the same events in log order."""
    spec, layout = velocity
    reference = WindowAggregator(spec)
    newest = {}
    by_partition = {p: [e for e in entries if "user_id" in e and partition_of(e["user_id"], PARTITIONS) == p] for p in range(PARTITIONS)}
    for partition_entries in by_partition.values():
        for fields in partition_entries:
            try:
                event = parse_event(fields, spec)
            except MalformedEvent:
                continue
            for row in reference.apply(event)[1]:
                if row.entity not in newest or row.micros >= newest[row.entity].micros:
                    newest[row.entity] = row
    reader = OnlineFeatureReader(redis.Redis.from_url(redis_url), project, [layout], [f"user_velocity:{n}" for n in spec.feature_names])
    users = sorted(newest)
    online = reader.read({"user_id": users})
    for index, user in enumerate(users):
        expected = [float("nan") if v is None else float(v) for v in newest[user].features]
        assert [v for v in online.values[index]] == pytest.approx(expected, nan_ok=True, rel=0, abs=0), user
