"""The stream processor against a real Redis: rows in Feast's layout, exactly once across SIGKILL and
restart, poison and late events dead-lettered once, processors joining and leaving a group."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import subprocess
import signal
import threading
import time

import pytest
import redis

from core.redis_server import free_port
from eventlog.redis_streams import RedisEventLog
from stream_support import (
    PARTITIONS, assert_rows_equal_the_aggregator, drain, make_entries, make_processor, make_records, online_state, run_in_child,
)
from support import wait_until

pytestmark = pytest.mark.integration

def test_rows_equal_the_aggregator_and_bad_events_are_dead_lettered_once(redis_url, velocity, projects):
    spec, _ = velocity
    project = projects()
    records = make_records(3000, seed=1)
    entries = make_entries(spec, records)
    log = RedisEventLog(redis.Redis.from_url(redis_url), project, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}")
    log.append(entries)
    processor = make_processor(redis_url, project, velocity)
    drain(processor, log)

    assert_rows_equal_the_aggregator(redis_url, project, velocity, entries)

    reasons = sorted(fields[b"dead_letter_reason"].decode().split(":")[0] for p in range(PARTITIONS) for _, fields in log.dead_letters(p))
    assert reasons == ["late", "malformed", "malformed", "malformed"]
    stats = redis.Redis.from_url(redis_url).hgetall(processor.stats_key)
    assert sum(int(v) for k, v in stats.items() if k.endswith(b":duplicate")) == 1


def test_sigkill_mid_stream_then_restart_leaves_redis_byte_identical(redis_url, velocity, projects):
    spec, _ = velocity
    entries = make_entries(spec, make_records(4000, seed=2))
    uninterrupted, killed = projects(), projects()
    for project in (uninterrupted, killed):
        RedisEventLog(redis.Redis.from_url(redis_url), project, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}").append(entries)
    log = RedisEventLog(redis.Redis.from_url(redis_url), uninterrupted, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}")
    drain(make_processor(redis_url, uninterrupted, velocity), log)

    child = multiprocessing.get_context("fork").Process(target=run_in_child, args=(redis_url, killed, velocity))
    child.start()
    killed_log = RedisEventLog(redis.Redis.from_url(redis_url), killed, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}")
    deadline = time.monotonic() + 60
    while sum(killed_log.lag().values()) > len(entries) // 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert 0 < sum(killed_log.lag().values()) < len(entries), "the kill must land mid-stream"
    time.sleep(3.2)  # the dead processor's leases expire
    drain(make_processor(redis_url, killed, velocity), killed_log)
    assert online_state(redis_url, killed) == online_state(redis_url, uninterrupted)
    # Each bad event dead-lettered exactly once (entry ids differ: the two logs were written separately).
    assert [fields for p in range(PARTITIONS) for _, fields in killed_log.dead_letters(p)] == \
        [fields for p in range(PARTITIONS) for _, fields in log.dead_letters(p)]


def test_a_second_processor_joins_and_leaves_the_group(redis_url, velocity, projects):
    spec, _ = velocity
    entries = make_entries(spec, make_records(3000, seed=3))
    reference, shared = projects(), projects()
    for project in (reference, shared):
        RedisEventLog(redis.Redis.from_url(redis_url), project, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}").append(entries[:1500])
    reference_log = RedisEventLog(redis.Redis.from_url(redis_url), reference, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}")
    shared_log = RedisEventLog(redis.Redis.from_url(redis_url), shared, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}")
    first = make_processor(redis_url, shared, velocity, name="a-first")
    drain(first, shared_log)
    # A second member joins: the partitions are split between the two.
    second = make_processor(redis_url, shared, velocity, name="b-second")
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
    drain(make_processor(redis_url, reference, velocity), reference_log)
    assert online_state(redis_url, shared) == online_state(redis_url, reference)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_a_redis_restart_mid_stream_changes_nothing_in_the_end(redis_url, velocity, projects, tmp_path):
    spec, _ = velocity
    entries = make_entries(spec, make_records(3000, seed=4))
    project = projects()
    reference = RedisEventLog(redis.Redis.from_url(redis_url), project, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}")
    reference.append(entries)
    drain(make_processor(redis_url, project, velocity), reference)

    # The same events through a Redis of its own that persists (append-only file) and restarts mid-stream.
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--daemonize", "yes", "--dir", str(tmp_path),
              "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    subprocess.run(server, check=True)
    wait_until(lambda: redis.Redis.from_url(url).ping())
    try:
        log = RedisEventLog(redis.Redis.from_url(url), project, spec.source_table, spec.entity_key, PARTITIONS, f"windows:{spec.view}")
        log.append(entries[:1500])
        stop = threading.Event()
        processor = make_processor(url, project, velocity, batch=50)
        worker = threading.Thread(target=processor.run, args=(stop,), daemon=True)
        worker.start()
        wait_until(lambda: sum(log.lag().values()) < 1000)
        redis.Redis.from_url(url).shutdown(save=True)  # the processor now meets a refused connection
        time.sleep(1)
        subprocess.run(server, check=True)
        wait_until(lambda: redis.Redis.from_url(url).ping())
        log.append(entries[1500:])
        wait_until(lambda: not any(log.lag().values()), seconds=120)
        stop.set()
        worker.join(timeout=30)
        assert online_state(url, project) == online_state(redis_url, project)
    finally:
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(url).shutdown(nosave=True)
