"""The stream processor against a real Redis: rows in Feast's layout, exactly once across SIGKILL and
restart, poison and late events dead-lettered once, processors joining and leaving a group."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis

from featurestack.redis_server import project_keys
from serving.redis_layout import ViewLayout
from streaming.aggregator import WindowAggregator
from eventlog.events import encode_record, parse_event
from streaming.processor import StreamProcessor
from eventlog.redis_streams import RedisEventLog

pytestmark = pytest.mark.integration

PARTITIONS = 4
START = datetime(2026, 11, 10, tzinfo=timezone.utc)


def _records(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    clock = {user: START + timedelta(seconds=rng.randrange(86_400)) for user in range(1, 60)}
    records = []
    for n in range(count):
        user = rng.randrange(1, 60)
        clock[user] += timedelta(microseconds=rng.choice([0, 1, rng.randrange(10**6), rng.randrange(10**10)]))
        records.append({"txn_id": f"t{n}", "user_id": user, "merchant_id": rng.randrange(1, 9),
                        "amount": round(rng.uniform(0.5, 400), 2), "event_timestamp": clock[user]})
    return records


def _entries(spec, records) -> list[dict]:
    entries = [encode_record(record) for record in records]
    entries.insert(50, dict(entries[10]))  # a re-delivered event
    entries.insert(100, {"txn_id": "bad-1", "merchant_id": "3", "amount": "5.0", "event_timestamp": "2026-11-10T01:00:00Z"})
    entries.insert(150, {**entries[5], "txn_id": "bad-2", "amount": "a lot"})
    entries.insert(200, {**entries[6], "txn_id": "bad-3", "event_timestamp": "yesterday"})
    # Far older than user 1's newest event minus the largest window: too late.
    entries.append({**encode_record({**records[0], "txn_id": "late-1", "user_id": 1}),
                    "event_timestamp": "2026-10-01T00:00:00.000000Z"})
    return entries


@pytest.fixture
def velocity(declared_views, user_velocity_spec):
    view = declared_views["user_velocity"]
    features = tuple((field.name, field.dtype.to_value_type().name.lower()) for field in view.features)
    return user_velocity_spec, ViewLayout(view.name, (("user_id", "int64"),), features, view.ttl)


@pytest.fixture
def projects(redis_url):
    made = []

    def new() -> str:
        made.append(f"fs_stream_{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield new
    client = redis.Redis.from_url(redis_url)
    for project in made:
        keys = list(project_keys(client, project)) + list(client.scan_iter(f"featurestack:{project}:*"))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
    client.close()


def _processor(url, project, velocity, name=None, batch=200, log=None) -> StreamProcessor:
    spec, layout = velocity
    return StreamProcessor(redis.Redis.from_url(url), project, spec, layout, PARTITIONS, batch_events=batch, block_ms=5, name=name,
                           log=log)


def _drain(processor: StreamProcessor, log: RedisEventLog, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processor.step()
        if len(processor.held) == PARTITIONS and not any(log.lag().values()):
            return
    raise AssertionError(f"log not drained: lag {log.lag()}")


def _online_state(url: str, project: str) -> dict:
    client = redis.Redis.from_url(url)
    state = {key[: -len(project)]: client.hgetall(key) for key in project_keys(client, project)}
    client.close()
    return state


def _run_in_child(url, project, velocity):
    processor = _processor(url, project, velocity, name="child", batch=50)
    processor.run(threading.Event())


def assert_rows_equal_the_aggregator(redis_url, project, velocity, entries) -> None:
    """What Redis holds is the newest row per user of an aggregator fed the same events in log order."""
    spec, layout = velocity
    reference = WindowAggregator(spec)
    newest = {}
    from eventlog.events import MalformedEvent, partition_of

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
    from serving.online_reader import OnlineFeatureReader

    reader = OnlineFeatureReader(redis.Redis.from_url(redis_url), project, [layout], [f"user_velocity:{n}" for n in spec.feature_names])
    users = sorted(newest)
    online = reader.read({"user_id": users})
    for index, user in enumerate(users):
        expected = [float("nan") if v is None else float(v) for v in newest[user].features]
        assert [v for v in online.values[index]] == pytest.approx(expected, nan_ok=True, rel=0, abs=0), user


def test_rows_equal_the_aggregator_and_bad_events_are_dead_lettered_once(redis_url, velocity, projects):
    spec, _ = velocity
    project = projects()
    records = _records(3000, seed=1)
    entries = _entries(spec, records)
    log = RedisEventLog(redis.Redis.from_url(redis_url), project, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}")
    log.append(entries)
    processor = _processor(redis_url, project, velocity)
    _drain(processor, log)

    assert_rows_equal_the_aggregator(redis_url, project, velocity, entries)

    reasons = sorted(fields[b"dead_letter_reason"].decode().split(":")[0] for p in range(PARTITIONS) for _, fields in log.dead_letters(p))
    assert reasons == ["late", "malformed", "malformed", "malformed"]
    stats = redis.Redis.from_url(redis_url).hgetall(processor.stats_key)
    assert sum(int(v) for k, v in stats.items() if k.endswith(b":duplicate")) == 1


def test_sigkill_mid_stream_then_restart_leaves_redis_byte_identical(redis_url, velocity, projects):
    spec, _ = velocity
    entries = _entries(spec, _records(4000, seed=2))
    uninterrupted, killed = projects(), projects()
    for project in (uninterrupted, killed):
        RedisEventLog(redis.Redis.from_url(redis_url), project, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}").append(entries)
    log = RedisEventLog(redis.Redis.from_url(redis_url), uninterrupted, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}")
    _drain(_processor(redis_url, uninterrupted, velocity), log)

    child = multiprocessing.get_context("fork").Process(target=_run_in_child, args=(redis_url, killed, velocity))
    child.start()
    killed_log = RedisEventLog(redis.Redis.from_url(redis_url), killed, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}")
    deadline = time.monotonic() + 60
    while sum(killed_log.lag().values()) > len(entries) // 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert 0 < sum(killed_log.lag().values()) < len(entries), "the kill must land mid-stream"
    time.sleep(3.2)  # the dead processor's leases expire
    _drain(_processor(redis_url, killed, velocity), killed_log)
    assert _online_state(redis_url, killed) == _online_state(redis_url, uninterrupted)
    # Each bad event dead-lettered exactly once (entry ids differ: the two logs were written separately).
    assert [fields for p in range(PARTITIONS) for _, fields in killed_log.dead_letters(p)] == \
        [fields for p in range(PARTITIONS) for _, fields in log.dead_letters(p)]


def test_a_second_processor_joins_and_leaves_the_group(redis_url, velocity, projects):
    spec, _ = velocity
    entries = _entries(spec, _records(3000, seed=3))
    reference, shared = projects(), projects()
    for project in (reference, shared):
        RedisEventLog(redis.Redis.from_url(redis_url), project, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}").append(entries[:1500])
    reference_log = RedisEventLog(redis.Redis.from_url(redis_url), reference, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}")
    shared_log = RedisEventLog(redis.Redis.from_url(redis_url), shared, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}")
    first = _processor(redis_url, shared, velocity, name="a-first")
    _drain(first, shared_log)
    # A second member joins: the partitions are split between the two.
    second = _processor(redis_url, shared, velocity, name="b-second")
    second.membership.heartbeat()
    first._rebalance()
    second._rebalance()
    assert sorted(first.held) == [0, 2] and sorted(second.held) == [1, 3]
    shared_log.append(entries[1500:])
    for _ in range(200):
        first.step()
        second.step()
    assert not any(shared_log.lag().values())
    # It leaves (stops): the first takes its partitions back and rebuilds their state from the log.
    stop = threading.Event()
    stop.set()
    second.run(stop)
    first._rebalance()
    assert sorted(first.held) == [0, 1, 2, 3]
    reference_log.append(entries[1500:])
    _drain(_processor(redis_url, reference, velocity), reference_log)
    assert _online_state(redis_url, shared) == _online_state(redis_url, reference)
