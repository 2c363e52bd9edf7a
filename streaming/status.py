"""How a stream is doing, read from the log and the processors' group (for Dagster and `status`)."""

from __future__ import annotations

import time
from dataclasses import dataclass


from eventlog.redis_streams import RedisEventLog
from streaming.processor import LEASE_MS

RATE_WINDOW_S = 60


@dataclass(frozen=True)
class StreamStatus:
    unprocessed: int  # events appended but not yet applied and acknowledged
    lag_seconds: float  # how long the oldest unprocessed event has been waiting (0: none waiting)
    events_per_second: float  # appended over the last minute
    processors: int  # live members of the group
    dead_letters: int

    def describe(self) -> str:
        return (f"{self.unprocessed:,} events waiting (oldest {self.lag_seconds:.1f} s), {self.events_per_second:,.1f} events/s "
                f"over the last {RATE_WINDOW_S} s, {self.processors} processor(s), {self.dead_letters:,} dead letters")


def _millis(entry_id: bytes | str) -> int:
    return int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0])


def stream_status(log: RedisEventLog, now_ms: int | None = None) -> StreamStatus:
    client = log.client
    now_ms = now_ms or int(time.time() * 1000)
    oldest, recent, dead = None, 0, 0
    for partition, key in enumerate(log.keys):
        dead += client.xlen(f"{log.prefix}:dead:{partition}")
        if not client.exists(key):
            continue
        recent += sum(1 for entry_id, _ in client.xrevrange(key, "+", now_ms - RATE_WINDOW_S * 1000, count=100_000))
        group = next((g for g in client.xinfo_groups(key) if g["name"].decode() == log.group), None)
        after = "-" if group is None else "(" + group["last-delivered-id"].decode()
        waiting = [entry_id for entry_id, _ in client.xrange(key, after, "+", count=1)]
        if group is not None and group["pending"]:
            waiting.append(client.xpending(key, log.group)["min"])
        for entry_id in waiting:
            oldest = min(oldest or now_ms, _millis(entry_id))
    members = client.zrangebyscore(f"{log.prefix}:{log.group}:members", now_ms - LEASE_MS, "+inf")
    return StreamStatus(
        unprocessed=sum(log.lag().values()), lag_seconds=max(0.0, (now_ms - oldest) / 1000) if oldest else 0.0,
        events_per_second=recent / RATE_WINDOW_S, processors=len(members), dead_letters=dead,
    )
