"""The event log on NATS JetStream, for deployments that keep the log outside the online store.

Same semantics as eventlog/redis_streams.py: one stream per (project, table, partition key) with one subject
per partition; a durable pull consumer with explicit acks per (group, partition); history = the entries
at or below the consumer's ack floor; dead letters kept once per source entry.

Pending first: JetStream redelivers an unacknowledged entry only after its ack wait, and after the new ones
already queued, which would break an entity's order. So taking a partition (ensure_group) recreates its
consumer at the ack floor: everything delivered but not acknowledged comes again first, in log order, at
once. The consumer's own config keeps where it started, so the floor is known before its first ack.

nats-py is asyncio-only: each NatsEventLog runs one event loop in a background thread and its methods
block on it, every wait bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from eventlog.events import partition_of

_T = TypeVar("_T")
_TIMEOUT_S = 10.0  # any one call to NATS
_ACK_WAIT_S = 60.0  # a holder acknowledges each batch within milliseconds; this only covers a stalled one
_PAGE = 5_000
_SOURCE_HEADER = "Featurestack-Source-Sequence"
_WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for a failed Nats-Expected-Last-Subject-Sequence
_NAME_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def _token(kind: str, value: str) -> str:
    if not _NAME_TOKEN.match(value):
        raise ValueError(f"NATS event log: {kind} {value!r} must be letters, digits, '_' or '-' (it names a stream and subjects)")
    return value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(data: bytes) -> dict[bytes, bytes]:
    """Fields as Redis Streams returns them (bytes to bytes), so both logs hand the processor the same entries."""
    return {name.encode(): value.encode() for name, value in json.loads(data).items()}


def _entry_id(msg: Msg) -> bytes:
    return str(msg.metadata.sequence.stream).encode()


class NatsEventLog:
    def __init__(self, url: str, project: str, table: str, partition_key: str, partitions: int, group: str = ""):
        self.partition_key = partition_key
        self.partitions = partitions
        self.group = group
        names = "_".join(_token(kind, value) for kind, value in (("project", project), ("table", table), ("partition key", partition_key)))
        self.stream = f"featurestack_events_{names}"
        self.dead_stream = f"featurestack_dead_{names}"
        self.subjects = [f"featurestack.{project}.events.{table}.{partition_key}.{p}" for p in range(partitions)]
        self.dead_subjects = [f"featurestack.{project}.dead.{table}.{partition_key}.{p}" for p in range(partitions)]
        # Consumer names allow neither '.' nor '*' nor '>'; a group such as "windows:user_velocity" becomes one.
        self.consumers = [f"{re.sub(r'[^A-Za-z0-9_-]', '_', group)}_{p}" for p in range(partitions)]
        self._subscriptions: dict[int, Any] = {}
        self._delivered: dict[int, dict[bytes, Msg]] = {}  # read but not yet acknowledged, to ack through
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats-event-log", daemon=True)
        self._thread.start()
        try:
            self._nc = self._call(nats.connect(url, connect_timeout=_TIMEOUT_S, max_reconnect_attempts=-1))
            self._js = self._nc.jetstream(timeout=_TIMEOUT_S)
            self._call(self._ensure_streams())
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, _T], timeout: float = _TIMEOUT_S * 3) -> _T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"NATS event log {self.stream}: no answer within {timeout} s") from None

    async def _ensure_streams(self) -> None:
        for name, subjects in ((self.stream, self.subjects), (self.dead_stream, self.dead_subjects)):
            try:
                await self._js.stream_info(name)
            except nats.js.errors.NotFoundError:
                await self._js.add_stream(StreamConfig(name=name, subjects=[subjects[0].rsplit(".", 1)[0] + ".*"]))

    def close(self) -> None:
        try:
            self._call(self._nc.close(), timeout=_TIMEOUT_S)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    # producer side
    def append(self, entries: Sequence[Mapping[str, str]]) -> None:
        """Append entries to their entities' partitions, in order (one connection keeps the order), waiting for
        JetStream to have stored every one. An entry without an entity key lands on the partition of the empty
        key: the processor dead-letters it with its reason."""
        self._call(self._append(entries))

    async def _append(self, entries: Sequence[Mapping[str, str]]) -> None:
        futures = []
        for fields in entries:
            subject = self.subjects[partition_of(fields.get(self.partition_key, ""), self.partitions)]
            futures.append(await self._js.publish_async(subject, json.dumps(dict(fields)).encode(), wait_stall=_TIMEOUT_S))
        await asyncio.wait_for(asyncio.gather(*futures), _TIMEOUT_S)

    # consumer side
    def ensure_group(self, partition: int) -> None:
        """(Re)create the group's consumer of the partition at its ack floor and subscribe to it."""
        self._call(self._ensure_group(partition))

    async def _ensure_group(self, partition: int) -> None:
        previous = self._subscriptions.pop(partition, None)
        if previous is not None:
            await previous.unsubscribe()
        self._delivered[partition] = {}
        name = self.consumers[partition]
        floor = 0
        try:
            floor = self._floor(await self._js.consumer_info(self.stream, name))
            await self._js.delete_consumer(self.stream, name)
        except nats.js.errors.NotFoundError:
            pass
        start = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": floor + 1} if floor else {"deliver_policy": DeliverPolicy.ALL}
        await self._js.add_consumer(self.stream, ConsumerConfig(
            durable_name=name, filter_subject=self.subjects[partition], ack_policy=AckPolicy.EXPLICIT,
            ack_wait=_ACK_WAIT_S, max_ack_pending=-1, **start))
        self._subscriptions[partition] = await self._js.pull_subscribe_bind(durable=name, stream=self.stream)

    @staticmethod
    def _floor(info: Any) -> int:
        """Stream sequence at or below which every entry of the partition is acknowledged. Before its first
        ack a consumer reports 0: its floor is then where it was created to start."""
        if info.ack_floor.consumer_seq:
            return info.ack_floor.stream_seq
        return max((info.config.opt_start_seq or 1) - 1, 0)

    def history(self, partition: int) -> Iterator[tuple[bytes, dict]]:
        """Entries already processed (at or below the ack floor), oldest first: the state is rebuilt from them."""
        try:
            floor = self._floor(self._call(self._js.consumer_info(self.stream, self.consumers[partition])))
        except nats.js.errors.NotFoundError:
            return
        for msg in self._replay(self.stream, self.subjects[partition], floor):
            yield _entry_id(msg), _decode(msg.data)

    def _replay(self, stream: str, subject: str, last: int | None) -> Iterator[Msg]:
        """Messages of `subject` up to stream sequence `last` (None: all), oldest first, through an ephemeral
        consumer that acknowledges nothing."""
        if last == 0:
            return
        name = f"replay_{uuid.uuid4().hex}"
        self._call(self._js.add_consumer(stream, ConsumerConfig(
            name=name, filter_subject=subject, deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0)))
        subscription = self._call(self._js.pull_subscribe_bind(name=name, stream=stream))
        try:
            remaining = self._call(subscription.consumer_info()).num_pending
            while remaining:
                # Ask for no more than is stored: a fetch short of its batch would wait out its timeout.
                page = self._call(subscription.fetch(min(remaining, _PAGE), timeout=_TIMEOUT_S))
                for msg in page:
                    if last is not None and msg.metadata.sequence.stream > last:
                        return
                    yield msg
                remaining = page[-1].metadata.num_pending
        finally:
            self._call(subscription.unsubscribe())
            self._call(self._js.delete_consumer(stream, name))

    def read(self, partitions: Sequence[int], count: int, block_ms: int, pending_first: set[int]) -> list[tuple[int, bytes, dict]]:
        """[(partition, entry id, fields)], up to `count` per partition, waiting up to `block_ms` for some. The
        consumer restarted at the ack floor when the partition was taken, so the entries delivered but never
        acknowledged come first by construction; a partition in `pending_first` is read without waiting."""
        if not partitions:
            return []
        wait_s = max(block_ms, 1) / 1000
        replies = self._call(self._fetch_all(partitions, count, wait_s, pending_first))
        result = []
        for partition, msgs in zip(partitions, replies):
            delivered = self._delivered[partition]
            for msg in msgs:
                entry_id = _entry_id(msg)
                delivered[entry_id] = msg
                result.append((partition, entry_id, _decode(msg.data)))
        return result

    async def _fetch_all(self, partitions: Sequence[int], count: int, wait_s: float, pending_first: set[int]) -> list[list[Msg]]:
        return await asyncio.gather(*(self._fetch(p, count, 0.001 if p in pending_first else wait_s) for p in partitions))

    async def _fetch(self, partition: int, count: int, timeout_s: float) -> list[Msg]:
        try:
            return await self._subscriptions[partition].fetch(count, timeout=timeout_s)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return []

    def ack(self, acks: Mapping[int, list[bytes]]) -> None:
        self._call(self._ack(acks))

    async def _ack(self, acks: Mapping[int, list[bytes]]) -> None:
        sent = 0
        for partition, ids in acks.items():
            delivered = self._delivered.get(partition, {})
            for entry_id in ids:
                msg = delivered.pop(entry_id, None)
                if msg is not None:  # None: the partition was handed over since; its next holder redelivers it
                    await msg.ack()
                    sent += 1
        if sent:  # on the wire before returning; the server applies them asynchronously
            await self._nc.flush(timeout=_TIMEOUT_S)

    def dead_letter(self, partition: int, entry_id: bytes, fields: Mapping[Any, Any], reason: str) -> None:
        """Keep the event with its reason, once per source entry: a dead letter is written only when its source
        sequence is newer than the partition's last one (a redelivery after a crash re-sends older ones), and
        the write expects that last one to be still the last."""
        self._call(self._dead_letter(partition, int(entry_id), fields, reason))

    async def _dead_letter(self, partition: int, source: int, fields: Mapping[Any, Any], reason: str) -> None:
        subject = self.dead_subjects[partition]
        record = {**{_text(k): _text(v) for k, v in fields.items()}, "dead_letter_reason": reason}
        while True:
            try:
                last = await self._js.get_last_msg(self.dead_stream, subject)
                last_seq, last_source = last.seq, int(last.headers[_SOURCE_HEADER])
            except nats.js.errors.NotFoundError:
                last_seq, last_source = 0, 0
            if last_source >= source:
                return
            try:
                await self._js.publish(subject, json.dumps(record).encode(), headers={
                    _SOURCE_HEADER: str(source), "Nats-Msg-Id": f"{partition}:{source}",
                    "Nats-Expected-Last-Subject-Sequence": str(last_seq)})
                return
            except nats.js.errors.BadRequestError as error:
                if error.err_code != _WRONG_LAST_SEQUENCE:
                    raise

    def dead_letters(self, partition: int) -> list[tuple[bytes, dict]]:
        """[(source entry id, fields with dead_letter_reason)], oldest first."""
        return [(msg.headers[_SOURCE_HEADER].encode(), _decode(msg.data))
                for msg in self._replay(self.dead_stream, self.dead_subjects[partition], None)]

    def lag(self) -> dict[int, int]:
        """Entries not yet acknowledged by the group, per partition (all of them before the group reads it)."""
        return self._call(self._lag())

    async def _lag(self) -> dict[int, int]:
        lags = {}
        stored = None
        for partition, name in enumerate(self.consumers):
            try:
                info = await self._js.consumer_info(self.stream, name)
                lags[partition] = info.num_pending + info.num_ack_pending
            except nats.js.errors.NotFoundError:
                if stored is None:
                    stored = (await self._js.stream_info(self.stream, subjects_filter=">")).state.subjects or {}
                lags[partition] = stored.get(self.subjects[partition], 0)
        return lags
