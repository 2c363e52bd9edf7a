"""The embedded event log: Redis Streams, one stream per partition, one consumer group per view.

Each partition is read by exactly one processor at a time (streaming/membership.py hands out leases),
always as the group's consumer `owner`: after a crash or a hand-over the next holder sees the entries
delivered but never acknowledged as its own pending entries and processes them first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import redis

from eventlog.events import partition_of

CONSUMER = "owner"
_HISTORY_PAGE = 5_000


def log_prefix(project: str, table: str, partition_key: str) -> str:
    """Events of `table`, partitioned by the hash of `partition_key` (a windowed view of that entity reads them)."""
    return f"featurestack:{project}:events:{table}:{partition_key}"


class EventLog(Protocol):
    """What the stream processor needs of a partitioned event log (Redis Streams here; NATS JetStream too)."""

    group: str
    partitions: int

    def append(self, entries: Sequence[Mapping[str, str]]) -> None: ...
    def ensure_group(self, partition: int) -> None: ...
    def history(self, partition: int) -> Iterator[tuple[bytes, dict]]: ...
    def read(self, partitions: Sequence[int], count: int, block_ms: int, pending_first: set[int]) -> list[tuple[int, bytes, dict]]: ...
    def ack(self, acks: Mapping[int, list[bytes]]) -> None: ...
    def dead_letter(self, partition: int, entry_id: bytes, fields: Mapping[Any, Any], reason: str) -> None: ...
    def dead_letters(self, partition: int) -> list[tuple[bytes, dict]]: ...
    def lag(self) -> dict[int, int]: ...
    def close(self) -> None: ...


class RedisEventLog:
    def __init__(self, client: redis.Redis, project: str, table: str, partition_key: str, partitions: int, group: str = ""):
        self.client = client
        self.prefix = log_prefix(project, table, partition_key)
        self.partition_key = partition_key
        self.partitions = partitions
        self.group = group
        self.keys = [f"{self.prefix}:{p}" for p in range(partitions)]

    # producer side
    def append(self, entries: Sequence[Mapping[str, str]]) -> None:
        """Append entries (encoded events) to their entities' partitions, in order, in one round trip. An
        entry without an entity key still lands (on the partition of the empty key): the processor then
        dead-letters it with its reason rather than the producer losing it."""
        pipe = self.client.pipeline(transaction=False)
        for fields in entries:
            pipe.xadd(self.keys[partition_of(fields.get(self.partition_key, ""), self.partitions)], fields)
        pipe.execute()

    # consumer side
    def ensure_group(self, partition: int) -> None:
        try:
            self.client.xgroup_create(self.keys[partition], self.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def history(self, partition: int) -> Iterator[tuple[bytes, dict]]:
        """Entries already processed (delivered and acknowledged), oldest first: the state is rebuilt from them."""
        key = self.keys[partition]
        last_delivered = self._last_delivered(partition)
        if last_delivered is None:
            return
        pending = {entry["message_id"] for entry in self._pending(partition)}
        start = "-"
        while True:
            page = self.client.xrange(key, start, last_delivered, count=_HISTORY_PAGE)
            for entry_id, fields in page:
                if entry_id not in pending:
                    yield entry_id, fields
            if len(page) < _HISTORY_PAGE:
                return
            start = "(" + page[-1][0].decode()

    def _last_delivered(self, partition: int) -> bytes | None:
        for group in self.client.xinfo_groups(self.keys[partition]):
            if group["name"].decode() == self.group:
                last = group["last-delivered-id"]
                return None if last in (b"0-0", "0-0") else last
        return None

    def _pending(self, partition: int) -> list[dict]:
        pending, start = [], "-"
        while True:
            page = self.client.xpending_range(self.keys[partition], self.group, min=start, max="+", count=_HISTORY_PAGE)
            pending += page
            if len(page) < _HISTORY_PAGE:
                return pending
            start = "(" + page[-1]["message_id"].decode()

    def read(self, partitions: Sequence[int], count: int, block_ms: int, pending_first: set[int]) -> list[tuple[int, bytes, dict]]:
        """[(partition, entry id, fields)]: for partitions in `pending_first` their unacknowledged entries
        (the caller drops a partition from it once that returns nothing), else new entries."""
        if not partitions:
            return []
        streams = {self.keys[p]: ("0" if p in pending_first else ">") for p in partitions}
        block = None if pending_first & set(partitions) else block_ms
        replies = self.client.xreadgroup(self.group, CONSUMER, streams, count=count, block=block)
        index = {key: p for p, key in enumerate(self.keys)}
        result = []
        for key, entries in replies or []:
            partition = index[key.decode() if isinstance(key, bytes) else key]
            result += [(partition, entry_id, fields) for entry_id, fields in entries if fields]
        return result

    def ack(self, acks: Mapping[int, list[bytes]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for partition, ids in acks.items():
            if ids:
                pipe.xack(self.keys[partition], self.group, *ids)
        pipe.execute()

    def dead_letter(self, partition: int, entry_id: bytes, fields: Mapping[Any, Any], reason: str) -> None:
        """Keep the event with its reason, under its source entry id: writing it again (a redelivery after a
        crash) is refused by Redis as not newer, so every bad event is kept exactly once."""
        record = {**{(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}, "dead_letter_reason": reason}
        try:
            self.client.xadd(f"{self.prefix}:dead:{partition}", record, id=entry_id)
        except redis.ResponseError as error:
            if "equal or smaller" not in str(error):
                raise

    def dead_letters(self, partition: int) -> list[tuple[bytes, dict]]:
        return self.client.xrange(f"{self.prefix}:dead:{partition}")

    def lag(self) -> dict[int, int]:
        """Entries not yet processed (undelivered, or delivered and not acknowledged), per partition."""
        lags = {}
        for partition, key in enumerate(self.keys):
            groups = self.client.xinfo_groups(key) if self.client.exists(key) else []
            group = next((g for g in groups if g["name"].decode() == self.group), None)
            if group is None:
                lags[partition] = self.client.xlen(key)
                continue
            undelivered = group.get("lag")
            if undelivered is None:  # Redis cannot tell (e.g. after a restart): count what follows the last delivery
                undelivered = len(self.client.xrange(key, "(" + group["last-delivered-id"].decode(), "+"))
            lags[partition] = int(undelivered) + int(group.get("pending") or 0)
        return lags

    def close(self) -> None:
        """Nothing to release: the Redis client belongs to the caller."""
