"""The event log a deployment configured: Redis Streams in the online store's Redis, or NATS JetStream."""

from __future__ import annotations

import redis

from eventlog.redis_streams import EventLog, RedisEventLog
from core.settings import StreamSettings


def open_event_log(stream: StreamSettings, client: redis.Redis, project: str, table: str, partition_key: str,
                   group: str = "") -> EventLog:
    """Events of `table` partitioned by `partition_key`, read by consumer `group` (empty for a producer).
    `client` is the online store's Redis, used when the log lives there; close() the log when done."""
    if stream.log == "nats":
        from eventlog.nats_jetstream import NatsEventLog  # nats-py only where the log is NATS

        return NatsEventLog(stream.nats_url, project, table, partition_key, stream.partitions, group)
    return RedisEventLog(client, project, table, partition_key, stream.partitions, group)
