"""The stream processor: events from the log -> windowed rows -> Redis in Feast's layout.

Scale-out: N processors join one group; partitions (by entity hash) are spread over the live members and
each partition is held by one processor at a time through a lease, so an entity's events are applied in
log order by one process. A processor taking a partition rebuilds that partition's window state from the
events already processed (the log keeps them for the state horizon), then processes what was delivered
but never acknowledged, then new events.

Effectively exactly once: rows are deterministic functions of the applied events, written under Feast's
monotonic rule with equal timestamps overwritten (a re-applied event rewrites the same bytes), events
are acknowledged after their rows are written, duplicates (same event id within the horizon) are
ignored, and malformed or too-late events go to the dead-letter stream with their reason, once.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import pyarrow as pa
import redis

from core.windows import WindowedView
from eventlog.events import MalformedEvent, parse_event
from eventlog.redis_streams import EventLog, RedisEventLog, log_prefix
from onlinestore import resp_bulk  # noqa: F401  (the writer's compiled kernels load at start, not on the first write)
from onlinestore.online_writer import publish_latest
from onlinestore.redis_layout import ViewLayout
from streaming.aggregator import Outcome, Row, WindowAggregator

log = logging.getLogger(__name__)

LEASE_MS = 3_000  # a processor that stops renewing loses its partitions after this long


def consumer_group(view: str) -> str:
    """The log's consumer group of a view's processors (all of them read its events as one)."""
    return f"windows:{view}"


@dataclass
class Counters:
    applied: int = 0
    duplicate: int = 0
    late: int = 0
    malformed: int = 0
    last_event_micros: int = 0


def group_prefix(project: str, table: str, partition_key: str, group: str) -> str:
    """Redis keys of a processor group (members, leases, stats), whichever log it reads."""
    return f"{log_prefix(project, table, partition_key)}:{group}"


class Membership:
    """Live processors of a group (a sorted set of heartbeats) and the partition leases they hold."""

    _RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
    # Free, or still ours (a Redis that came back from disk keeps the lease we held before it went away).
    _ACQUIRE = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) "
                "else return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) end")
    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"

    def __init__(self, client: redis.Redis, prefix: str, name: str, partitions: int):
        self.client, self.name, self.partitions = client, name, partitions
        self.members_key = f"{prefix}:members"
        self.lease_keys = [f"{prefix}:lease:{p}" for p in range(partitions)]
        self._renew = client.register_script(self._RENEW)
        self._acquire = client.register_script(self._ACQUIRE)
        self._release = client.register_script(self._RELEASE)

    def heartbeat(self) -> list[str]:
        now = int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.members_key, {self.name: now})
        pipe.zremrangebyscore(self.members_key, "-inf", now - LEASE_MS)
        pipe.zrange(self.members_key, 0, -1)
        return sorted(member.decode() for member in pipe.execute()[-1])

    def wanted(self, members: list[str]) -> set[int]:
        """Partitions this member should hold: partition p goes to the (p mod n)-th live member."""
        if self.name not in members:
            return set()
        position = members.index(self.name)
        return {p for p in range(self.partitions) if p % len(members) == position}

    def acquire(self, partition: int) -> bool:
        return bool(self._acquire(keys=[self.lease_keys[partition]], args=[self.name, LEASE_MS]))

    def renew(self, partition: int) -> bool:
        return bool(self._renew(keys=[self.lease_keys[partition]], args=[self.name, LEASE_MS]))

    def release(self, partition: int) -> None:
        self._release(keys=[self.lease_keys[partition]], args=[self.name])

    def leave(self) -> None:
        self.client.zrem(self.members_key, self.name)


@dataclass
class _Partition:
    aggregator: WindowAggregator
    pending: bool = True  # delivered-but-unacknowledged entries still to be processed first
    counters: Counters = field(default_factory=Counters)


class StreamProcessor:
    """One member of a processor group for one windowed view."""

    def __init__(self, client: redis.Redis, project: str, spec: WindowedView, layout: ViewLayout, partitions: int,
                 batch_events: int = 1000, block_ms: int = 5, name: str | None = None, log: EventLog | None = None):
        """`client`: the online store's Redis (rows, leases, stats); `log`: where events come from (default:
        Redis Streams on the same Redis)."""
        self.client, self.project, self.spec, self.layout = client, project, spec, layout
        self.batch_events, self.block_ms = batch_events, block_ms
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.group = consumer_group(spec.view)
        self.log = log or RedisEventLog(client, project, spec.source_table, spec.entity_key, partitions, self.group)
        prefix = group_prefix(project, spec.source_table, spec.entity_key, self.group)
        self.membership = Membership(client, prefix, self.name, partitions)
        self.stats_key = f"{prefix}:stats"
        self.held: dict[int, _Partition] = {}
        self.rows_written = 0
        self._last_membership = 0.0

    # partitions
    def _take(self, partition: int) -> None:
        self.log.ensure_group(partition)
        state = _Partition(WindowAggregator(self.spec))
        replayed = 0
        for entry_id, fields in self.log.history(partition):
            self._apply(partition, state, entry_id, fields, emit=False)
            replayed += 1
        self.held[partition] = state
        log.info("%s took partition %d (state rebuilt from %d events)", self.name, partition, replayed)

    def _rebalance(self) -> None:
        members = self.membership.heartbeat()
        wanted = self.membership.wanted(members)
        for partition in list(self.held):
            if partition not in wanted or not self.membership.renew(partition):
                self.membership.release(partition)
                del self.held[partition]
                log.info("%s handed partition %d over", self.name, partition)
        for partition in sorted(wanted - set(self.held)):
            if self.membership.acquire(partition):
                self._take(partition)
        self._last_membership = time.monotonic()

    # events
    def _apply(self, partition: int, state: _Partition, entry_id: bytes, fields: dict, emit: bool) -> list[Row]:
        counters = state.counters
        try:
            event = parse_event(fields, self.spec)
        except MalformedEvent as error:
            counters.malformed += 1
            if emit:
                self.log.dead_letter(partition, entry_id, fields, f"malformed: {error}")
            return []
        outcome, rows = state.aggregator.apply(event)
        if outcome is Outcome.APPLIED:
            counters.applied += 1
            counters.last_event_micros = max(counters.last_event_micros, event.micros)
        elif outcome is Outcome.DUPLICATE:
            counters.duplicate += 1
        else:
            counters.late += 1
            if emit:
                self.log.dead_letter(partition, entry_id, fields,
                                     f"late: more than {self.spec.allowed_lateness} older than the entity's newest event")
        return rows

    def _write(self, rows: list[Row]) -> int:
        if not rows:
            return 0
        latest: dict = {}
        for row in rows:  # the newest instant per entity; a later emission of it supersedes an earlier one
            current = latest.get(row.entity)
            if current is None or row.micros >= current.micros:
                latest[row.entity] = row
        chosen = list(latest.values())
        columns = {self.spec.entity_key: pa.array([r.entity for r in chosen], pa.int64()),
                   self.spec.timestamp: pa.array([r.micros for r in chosen], pa.timestamp("us", tz="UTC"))}
        for index, feature in enumerate(self.spec.features):
            kind = pa.int64() if feature.value_type == "Int64" else pa.float64()
            columns[feature.name] = pa.array([r.features[index] for r in chosen], kind)
        result = publish_latest(self.client, self.project, self.layout, pa.table(columns),
                                timestamp_column=self.spec.timestamp, replace_equal=True)
        return result.written

    def step(self) -> int:
        """Read one batch from the held partitions, write its rows, acknowledge it; returns events read."""
        if time.monotonic() - self._last_membership > LEASE_MS / 3000:
            self._rebalance()
        partitions = sorted(self.held)
        if not partitions:
            time.sleep(self.block_ms / 1000)
            return 0
        pending = {p for p in partitions if self.held[p].pending}
        entries = self.log.read(partitions, self.batch_events, self.block_ms, pending)
        seen = {p for p, _, _ in entries}
        for p in pending - seen:
            self.held[p].pending = False
        rows: list[Row] = []
        acks: dict[int, list[bytes]] = {}
        for partition, entry_id, fields in entries:
            rows += self._apply(partition, self.held[partition], entry_id, fields, emit=True)
            acks.setdefault(partition, []).append(entry_id)
        self.rows_written += self._write(rows)
        self.log.ack(acks)
        if acks:
            self._publish_stats()
        return len(entries)

    def _publish_stats(self) -> None:
        fields = {}
        for partition, state in self.held.items():
            c = state.counters
            fields.update({f"{partition}:applied": c.applied, f"{partition}:duplicate": c.duplicate, f"{partition}:late": c.late,
                           f"{partition}:malformed": c.malformed, f"{partition}:last_event_micros": c.last_event_micros,
                           f"{partition}:updated_ms": int(time.time() * 1000), f"{partition}:owner": self.name})
        self.client.hset(self.stats_key, mapping=fields)

    def run(self, stop: threading.Event) -> None:
        held = -1
        try:
            while not stop.is_set():
                if len(self.held) != held:
                    # What exists now (imports, rebuilt window state) lives on: out of the collector's
                    # sight, a full collection never pauses the stream for hundreds of milliseconds.
                    gc.freeze()
                    held = len(self.held)
                try:
                    self.step()
                except (redis.ConnectionError, redis.TimeoutError) as error:
                    # Redis restarting: keep nothing half-known, rebuild from the log once it answers.
                    log.warning("%s: Redis unavailable (%s); retrying", self.name, error)
                    self.held.clear()
                    self._last_membership = 0.0
                    stop.wait(0.5)
        finally:
            try:
                for partition in list(self.held):
                    self.membership.release(partition)
                self.membership.leave()
            except redis.RedisError:
                pass
            self.held.clear()
