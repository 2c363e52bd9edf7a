"""The stream processor reading NATS JetStream (the real server on 127.0.0.1:4222) instead of Redis Streams:
the same rows, bad events dead-lettered once, SIGKILL then restart byte-identical, processors joining and
leaving. Each test writes its own streams (named by a fresh project) and deletes them."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from dataclasses import replace

import nats.js.errors
import pytest
import redis

from eventlog.logs import open_event_log
from eventlog.nats_jetstream import NatsEventLog
from eventlog.redis_streams import RedisEventLog
from core.settings import StreamSettings, load_settings
from streaming.processor import consumer_group
from stream_support import (
    PARTITIONS, assert_rows_equal_the_aggregator, drain, make_entries, make_processor, make_records, online_state,
)

pytestmark = pytest.mark.integration

NATS = StreamSettings(log="nats", nats_url=load_settings().stream.nats_url, partitions=PARTITIONS)


def _open(redis_url: str, project: str, spec) -> NatsEventLog:
    return open_event_log(NATS, redis.Redis.from_url(redis_url), project, spec.source_table, spec.entity_key, consumer_group(spec.view))


@pytest.fixture
def nats_logs(redis_url, velocity):
    """Opens the velocity view's NATS event logs as deployments do; deletes their streams and closes them afterwards."""
    opened = []

    def open_log(project: str) -> NatsEventLog:
        opened.append(_open(redis_url, project, velocity[0]))
        return opened[-1]

    yield open_log
    for log in opened:
        for stream in (log.stream, log.dead_stream):
            try:
                log._call(log._js.delete_stream(stream))
            except nats.js.errors.NotFoundError:  # another log of the same project deleted it already
                pass
        log.close()


def test_the_settings_choose_the_log(redis_url, velocity, projects, nats_logs):
    project = projects()
    assert isinstance(nats_logs(project), NatsEventLog)
    redis_log = open_event_log(replace(NATS, log="redis"), redis.Redis.from_url(redis_url), project, "transactions", "user_id")
    assert isinstance(redis_log, RedisEventLog)


def _dead_letters(log: NatsEventLog) -> list:
    return [letter for p in range(PARTITIONS) for letter in log.dead_letters(p)]


def _run_in_child(redis_url, project, velocity):
    make_processor(redis_url, project, velocity, name="child", batch=50, log=_open(redis_url, project, velocity[0])).run(threading.Event())


def _read_at_least(log: NatsEventLog, count: int) -> list:
    """Entries of partition 0 (a read may come back short, or with more, on a busy machine)."""
    read, deadline = [], time.monotonic() + 60
    while len(read) < count and time.monotonic() < deadline:
        read += log.read([0], count - len(read), 5, {0})
    return read


def test_unacknowledged_entries_come_first_to_the_next_holder_and_dead_letters_are_kept_once(velocity, projects, nats_logs):
    project = projects()
    entries = make_entries(velocity[0], make_records(200, seed=4))
    first = nats_logs(project)
    first.append(entries)
    stored = first.lag()[0]
    first.ensure_group(0)
    read = _read_at_least(first, 10)
    first.ack({0: [entry_id for _, entry_id, _ in read[:4]]})
    deadline = time.monotonic() + 60  # the server applies acks asynchronously
    while first.lag()[0] != stored - 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    taken_over = nats_logs(project)  # the first holder "dies" with 6 entries delivered, unacknowledged
    taken_over.ensure_group(0)
    assert [entry_id for entry_id, _ in taken_over.history(0)] == [entry_id for _, entry_id, _ in read[:4]]
    again = _read_at_least(taken_over, 6)
    assert [(entry_id, fields) for _, entry_id, fields in again[:6]] == [(entry_id, fields) for _, entry_id, fields in read[4:10]]

    partition, entry_id, fields = again[1]
    older_id = again[0][1]
    for _ in range(2):  # a redelivery dead-letters again: kept once; an older source is not newer
        taken_over.dead_letter(partition, entry_id, fields, "malformed: test")
    taken_over.dead_letter(partition, older_id, fields, "malformed: test")
    assert taken_over.dead_letters(partition) == [(entry_id, {**fields, b"dead_letter_reason": b"malformed: test"})]


def test_rows_equal_the_aggregator_and_bad_events_are_dead_lettered_once(redis_url, velocity, projects, nats_logs):
    project = projects()
    entries = make_entries(velocity[0], make_records(3000, seed=1))
    log = nats_logs(project)
    log.append(entries)
    processor = make_processor(redis_url, project, velocity, log=nats_logs(project))
    drain(processor, log)

    assert_rows_equal_the_aggregator(redis_url, project, velocity, entries)
    reasons = sorted(fields[b"dead_letter_reason"].decode().split(":")[0] for _, fields in _dead_letters(log))
    assert reasons == ["late", "malformed", "malformed", "malformed"]
    stats = redis.Redis.from_url(redis_url).hgetall(processor.stats_key)
    assert sum(int(v) for k, v in stats.items() if k.endswith(b":duplicate")) == 1


def test_sigkill_mid_stream_then_restart_leaves_redis_byte_identical(redis_url, velocity, projects, nats_logs):
    entries = make_entries(velocity[0], make_records(4000, seed=2))
    uninterrupted, killed = projects(), projects()
    log, killed_log = nats_logs(uninterrupted), nats_logs(killed)
    log.append(entries)
    killed_log.append(entries)
    drain(make_processor(redis_url, uninterrupted, velocity, log=nats_logs(uninterrupted)), log)

    child = multiprocessing.get_context("fork").Process(target=_run_in_child, args=(redis_url, killed, velocity))
    child.start()
    deadline = time.monotonic() + 60
    while sum(killed_log.lag().values()) > len(entries) // 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert 0 < sum(killed_log.lag().values()) < len(entries), "the kill must land mid-stream"
    time.sleep(3.2)  # the dead processor's leases expire
    drain(make_processor(redis_url, killed, velocity, log=nats_logs(killed)), killed_log)
    assert online_state(redis_url, killed) == online_state(redis_url, uninterrupted)
    # Each bad event dead-lettered exactly once, under the same source sequence (both logs got the same appends).
    assert _dead_letters(killed_log) == _dead_letters(log)


def _step_until_drained(processors, log, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while any(log.lag().values()):
        assert time.monotonic() < deadline, f"log not drained: lag {log.lag()}"
        for processor in processors:
            processor.step()


def test_a_second_processor_joins_and_leaves_the_group(redis_url, velocity, projects, nats_logs):
    entries = make_entries(velocity[0], make_records(3000, seed=3))
    reference, shared = projects(), projects()
    reference_log, shared_log = nats_logs(reference), nats_logs(shared)
    reference_log.append(entries[:1500])
    shared_log.append(entries[:1500])
    first = make_processor(redis_url, shared, velocity, name="a-first", log=nats_logs(shared))
    drain(first, shared_log)
    # A second member joins: the partitions are split between the two.
    second = make_processor(redis_url, shared, velocity, name="b-second", log=nats_logs(shared))
    second.membership.heartbeat()
    first._rebalance()
    second._rebalance()
    assert sorted(first.held) == [0, 2] and sorted(second.held) == [1, 3]
    shared_log.append(entries[1500:])
    _step_until_drained([first, second], shared_log)
    # It leaves (stops): the first takes its partitions back and rebuilds their state from the log.
    stop = threading.Event()
    stop.set()
    second.run(stop)
    first._rebalance()
    assert sorted(first.held) == [0, 1, 2, 3]
    reference_log.append(entries[1500:])
    drain(make_processor(redis_url, reference, velocity, log=nats_logs(reference)), reference_log)
    assert online_state(redis_url, shared) == online_state(redis_url, reference)
