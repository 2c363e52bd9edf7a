"""Fast reader of Feast's Redis layout: one HMGET per entity and view (the manifest's feature fields
plus `_ts:<view>`), all sent in one write, values decoded column-wise with numpy into a float matrix
(NaN where Feast would return None) plus per-view "missing entity" flags. No feast import.

Equal to `FeatureStore.get_online_features` on the same keys (tests/test_serving_reader.py), at a
fraction of its cost: no protobuf objects, no per-value Python conversion. A RedisCluster client
gets redis-py's cluster pipeline (routed by slot) with the same commands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from itertools import chain

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from core.redis_server import redis_client
from onlinestore.resp import StreamingConnection
from onlinestore.resp_bulk import DOUBLE, FLOAT, VARINT, decode_numeric_values, parse_hmget_replies, warm_up
from onlinestore.redis_layout import ViewLayout, feature_field, serialize_entity_key

_MAX_VALUE_BYTES = 11  # tag + up to a 10-byte varint (or 8 bytes of a double)
_CELL_BYTES = 16  # room per value: a numeric Value, or a Timestamp (at most 12 bytes)


def online_store_client(url: str, timeout_s: float, redis_type: str = "redis") -> redis.Redis | RedisCluster:
    """A Redis client (a RedisCluster when redis_type is redis_cluster) that fails within `timeout_s`:
    socket timeouts on connect and read, and no retries (redis-py's default retries a refused connection
    with backoff for ~10 s). The pool reconnects on the next call, so a server using it recovers by
    itself once Redis is back. A cluster client discovers the nodes now, so it needs one to answer."""
    return redis_client(url, redis_type, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                        retry=Retry(NoBackoff(), 0), health_check_interval=0)


@dataclass(frozen=True)
class OnlineFeatures:
    names: list[str]  # "view:feature", in the requested order
    values: np.ndarray  # float64 [rows, features]; NaN where the value is missing, null or expired
    missing_entity: np.ndarray  # bool [rows, views]: the entity has no row of that view (or only an expired one)
    views: list[str]
    event_nanos: np.ndarray | None = None  # int64 [rows, views]: the row's event timestamp (`_ts`), 0 if none

    def row_missing(self) -> np.ndarray:
        """Per row: any view had no value for its entity."""
        return self.missing_entity.any(axis=1)

    def filled(self, defaults: float | Mapping[str, float] = 0.0) -> np.ndarray:
        """`values` with NaN (null value or missing entity) replaced by a default: one number, or one
        per feature ref (refs not named get 0.0)."""
        if isinstance(defaults, Mapping):
            unknown = set(defaults) - set(self.names)
            if unknown:
                raise KeyError(f"defaults for features not read: {sorted(unknown)}")
            fill = np.array([defaults.get(name, 0.0) for name in self.names], dtype=np.float64)
        else:
            fill = np.full(len(self.names), float(defaults))
        return np.where(np.isnan(self.values), fill, self.values)


def timestamp_nanos(cells: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Serialized google.protobuf.Timestamp values (cells [n, bytes], lengths [n]) -> epoch nanoseconds
    (0 where empty): the two varint fields decoded byte position by byte position for all rows at once."""
    n = len(lengths)
    seconds, nanos = np.zeros(n, np.int64), np.zeros(n, np.int64)
    field, shift = np.zeros(n, np.int64), np.zeros(n, np.int64)  # field: 0 = a tag comes, 1 = seconds, 2 = nanos
    for position in range(cells.shape[1]):
        byte = cells[:, position].astype(np.int64)
        active = position < lengths
        tag = active & (field == 0)
        field = np.where(tag, np.where(byte == 0x08, 1, np.where(byte == 0x10, 2, 0)), field)
        shift = np.where(tag, 0, shift)
        varint = active & ~tag & (field > 0)
        part = np.where(varint, (byte & 0x7F) << shift, 0)
        seconds += np.where(field == 1, part, 0)
        nanos += np.where(field == 2, part, 0)
        shift = np.where(varint, shift + 7, shift)
        field = np.where(varint & (byte < 0x80), 0, field)
    return seconds * 1_000_000_000 + nanos


def _padded(values: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """Values as a zero-padded uint8 matrix [n, max(11, longest)] plus their lengths (0 for missing/null).
    Three C-level passes over the values (no per-value Python arithmetic)."""
    cells = [value or b"" for value in values]
    lengths = np.fromiter(map(len, cells), dtype=np.int64, count=len(cells))
    width = max(_MAX_VALUE_BYTES, int(lengths.max(initial=0)))
    matrix = np.zeros((len(cells), width), dtype=np.uint8)
    if lengths.any():
        data = np.frombuffer(b"".join(cells), dtype=np.uint8)
        rows = np.repeat(np.arange(len(cells)), lengths)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        matrix[rows, np.arange(len(data)) - starts] = data
    return matrix, lengths


_KINDS = {"int64": VARINT, "int32": VARINT, "bool": VARINT, "double": DOUBLE, "float": FLOAT}


def _decode(cells: np.ndarray, lengths: np.ndarray, value_types: Sequence[str]) -> np.ndarray:
    """The first len(value_types) fields of cells [entities, fields, bytes] -> float64 [entities, len(value_types)]."""
    out = np.empty((len(cells), len(value_types)), dtype=np.float64)
    kinds = np.array([_KINDS[value_type] for value_type in value_types], dtype=np.int64)
    field = decode_numeric_values(cells, lengths, kinds, out)
    if field >= 0:
        raise ValueError(f"a value of {int(lengths[:, field].max())} bytes where a {value_types[field]} feature was expected")
    return out


def decode_numeric_column(values: Sequence[bytes | None], value_type: str) -> np.ndarray:
    """Serialized feast Values of one numeric type -> float64 (NaN for empty/null)."""
    matrix, lengths = _padded(values)
    return _decode(matrix[:, None, :], lengths[:, None], [value_type])[:, 0]


def _resp_header(fields: Sequence[bytes]) -> tuple[bytes, bytes]:
    """RESP of `HMGET <key> <fields...>` split around the key: (head before the key's length, tail after it)."""
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
    tail = b"".join(b"$%d\r\n%s\r\n" % (len(field), field) for field in fields)
    return head, b"\r\n" + tail


@dataclass(frozen=True)
class _NumericKeyTemplate:
    """The HMGET command of a view whose join keys are all numeric, for a key of zeros: every entity's
    command is this one with its key values written in at fixed byte offsets (no per-row encoding)."""

    command: np.ndarray  # uint8
    slots: tuple[tuple[str, int, str], ...]  # (join key, byte offset in the command, little-endian dtype)
    key_span: tuple[int, int]  # where the Redis key lies in the command


def _numeric_key_template(layout: ViewLayout, suffix: bytes, head: bytes, tail: bytes) -> _NumericKeyTemplate | None:
    types = dict(layout.join_keys)
    if "string" in types.values():
        return None
    names = sorted(types)  # Feast's v3 key: count, every (type, length, name), every (type, length, value)
    key = serialize_entity_key({name: 0 for name in names}, types) + suffix
    prefix = head + b"$%d\r\n" % len(key)
    offset = len(prefix) + 4 + sum(8 + len(name.encode()) for name in names)
    slots = []
    for name in names:
        dtype = "<i8" if types[name] == "int64" else "<i4"
        slots.append((name, offset + 8, dtype))
        offset += 8 + np.dtype(dtype).itemsize
    command = np.frombuffer(prefix + key + tail, dtype=np.uint8)
    return _NumericKeyTemplate(command, tuple(slots), (len(prefix), len(prefix) + len(key)))


def _numeric_column(entities: Mapping[str, Sequence], name: str, dtype: str) -> np.ndarray:
    values = np.asarray(entities[name])
    if values.dtype.kind not in "iu":
        if any(value is None for value in values.tolist()):
            raise ValueError(f"join key {name!r} is null")
        values = values.astype(np.int64)
    info = np.iinfo(dtype)
    if len(values) and (values.min() < info.min or values.max() > info.max):
        raise ValueError(f"join key {name!r} has a value out of range for {np.dtype(dtype).name}")
    return values


class OnlineFeatureReader:
    """Reads `feature_refs` ("view:feature") of the given views for batches of entities.

    One round trip per batch: the HMGET commands of every view (one per distinct entity) are packed into
    one RESP buffer (for numeric join keys by stamping the key values into a command template), sent on
    one pooled connection, and each view's replies are decoded column-wise while Redis still works on
    the next view's. A Redis that does not answer raises redis.TimeoutError/ConnectionError after the
    client's socket timeout; the connection is then dropped, so the next call reconnects."""

    def __init__(self, client: redis.Redis, project: str, layouts: Sequence[ViewLayout], feature_refs: Sequence[str]):
        self._client = client
        self._suffix = project.encode()
        by_name = {layout.name: layout for layout in layouts}
        self.feature_refs = list(feature_refs)
        unknown = [ref for ref in self.feature_refs if ref.split(":", 1)[0] not in by_name]
        if unknown:
            raise ValueError(f"no layout for the view of {unknown}")
        self._plan: list[tuple[ViewLayout, list[tuple[int, str]], bytes, bytes, _NumericKeyTemplate | None]] = []
        self._fields: list[list[bytes]] = []
        for view_name in dict.fromkeys(ref.split(":", 1)[0] for ref in self.feature_refs):
            layout = by_name[view_name]
            types = dict(layout.features)
            columns = []  # (position in the output, value type), in HMGET field order
            fields = []
            for position, ref in enumerate(self.feature_refs):
                view, feature = ref.split(":", 1)
                if view == view_name:
                    if feature not in types:
                        raise ValueError(f"feature {ref!r} is not in view {view_name!r}")
                    if types[feature] not in _KINDS:
                        raise ValueError(f"feature {ref!r} is a {types[feature]}: this reader returns numbers")
                    columns.append((position, types[feature]))
                    fields.append(feature_field(view_name, feature))
            head, tail = _resp_header([*fields, layout.ts_field])
            self._plan.append((layout, columns, head, tail, _numeric_key_template(layout, self._suffix, head, tail)))
            self._fields.append([*fields, layout.ts_field])
        self.views = [layout.name for layout, *_ in self._plan]
        self.join_keys = sorted({key for layout, *_ in self._plan for key, _ in layout.join_keys})
        warm_up()  # the first request must not wait for a compilation

    def _distinct_keys(self, layout: ViewLayout, template: _NumericKeyTemplate | None, entities: Mapping[str, Sequence],
                       rows: int, head: bytes, tail: bytes) -> tuple[bytes | list[bytes], int, np.ndarray]:
        """(HMGET commands of the view's distinct entities, or their keys for a cluster client; how many;
        row -> distinct entity index). A batch of candidates often repeats an entity: it is read once."""
        missing = [name for name, _ in layout.join_keys if name not in entities]
        if missing:
            raise KeyError(f"entity rows lack the join key(s) {missing} of view {layout.name!r}")
        if template is not None:
            columns = [_numeric_column(entities, name, dtype) for name, _, dtype in template.slots]
            if len(columns) == 1:
                distinct, inverse = np.unique(columns[0], return_inverse=True)
                distinct = distinct[:, None]
            else:
                distinct, inverse = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
            commands = np.tile(template.command, (len(distinct), 1))
            for index, (_, offset, dtype) in enumerate(template.slots):
                width = np.dtype(dtype).itemsize
                commands[:, offset : offset + width] = distinct[:, index].astype(dtype).view(np.uint8).reshape(-1, width)
            if isinstance(self._client, redis.Redis):
                return commands.tobytes(), len(distinct), inverse.ravel()
            start, end = template.key_span
            return [row.tobytes() for row in commands[:, start:end]], len(distinct), inverse.ravel()
        types = dict(layout.join_keys)
        columns = {name: list(entities[name]) for name in types}
        index: dict[bytes, int] = {}
        inverse = np.empty(rows, dtype=np.int64)
        for row in range(rows):
            key = serialize_entity_key({name: columns[name][row] for name in types}, types) + self._suffix
            inverse[row] = index.setdefault(key, len(index))
        if not isinstance(self._client, redis.Redis):
            return list(index), len(index), inverse
        return b"".join(b"%s$%d\r\n%s%s" % (head, len(key), key, tail) for key in index), len(index), inverse

    def read(self, entities: Mapping[str, Sequence], as_of_nanos: np.ndarray | int | None = None) -> OnlineFeatures:
        """The features of each entity row. With `as_of_nanos` (per row, or one instant), a view's value
        older than as_of - the view's TTL counts as missing, exactly as in the point-in-time join
        (Feast's own online read ignores the TTL)."""
        rows = len(next(iter(entities.values()))) if entities else 0
        values = np.full((rows, len(self.feature_refs)), np.nan)
        missing = np.zeros((rows, len(self._plan)), dtype=bool)
        stamps = np.zeros((rows, len(self._plan)), dtype=np.int64)
        if rows == 0:
            return OnlineFeatures(names=self.feature_refs, values=values, missing_entity=missing, views=self.views, event_nanos=stamps)
        requests = [self._distinct_keys(layout, template, entities, rows, head, tail)
                    for layout, _, head, tail, template in self._plan]
        if isinstance(self._client, redis.Redis):
            with StreamingConnection(self._client) as connection:
                connection.send(b"".join(commands for commands, _, _ in requests))
                replies = _ReplyBuffer(connection)
                for view_index, (_, count, inverse) in enumerate(requests):
                    cells, lengths = replies.hmget(count, len(self._fields[view_index]))
                    self._decode(view_index, cells, lengths, inverse, values, missing, stamps)
        else:  # a RedisCluster: its pipeline routes each HMGET to the key's slot
            pipe = self._client.pipeline(transaction=False)
            for (keys, _, _), fields in zip(requests, self._fields):
                for key in keys:
                    pipe.hmget(key, fields)
            replies = pipe.execute()
            for view_index, (_, count, inverse) in enumerate(requests):
                cells, lengths = _padded(list(chain.from_iterable(replies[:count])))
                width = len(self._fields[view_index])
                self._decode(view_index, cells.reshape(count, width, -1), lengths.reshape(count, width), inverse, values, missing,
                             stamps)
                replies = replies[count:]
        if as_of_nanos is not None:
            self._expire(np.broadcast_to(np.asarray(as_of_nanos, dtype=np.int64), (rows,)), values, missing, stamps)
        return OnlineFeatures(names=self.feature_refs, values=values, missing_entity=missing, views=self.views, event_nanos=stamps)

    def _expire(self, as_of: np.ndarray, values: np.ndarray, missing: np.ndarray, stamps: np.ndarray) -> None:
        for view_index, (layout, columns, *_) in enumerate(self._plan):
            if layout.ttl:
                expired = ~missing[:, view_index] & (stamps[:, view_index] < as_of - layout.ttl // timedelta(microseconds=1) * 1000)
                missing[expired, view_index] = True
                values[np.ix_(expired, [position for position, _ in columns])] = np.nan

    def _decode(self, view_index: int, cells: np.ndarray, lengths: np.ndarray, inverse: np.ndarray,
                values: np.ndarray, missing: np.ndarray, stamps: np.ndarray) -> None:
        """One view's HMGET values (cells [distinct entities, fields, bytes], lengths [entities, fields];
        the features, then _ts) into `values`/`missing` of every row."""
        columns = self._plan[view_index][1]
        missing[:, view_index] = (lengths[:, -1] == 0)[inverse]
        stamps[:, view_index] = timestamp_nanos(cells[:, -1, :], lengths[:, -1])[inverse]
        decoded = _decode(cells, lengths, [value_type for _, value_type in columns])
        values[:, [position for position, _ in columns]] = decoded[inverse]


class _ReplyBuffer:
    """Raw reply bytes of one streamed request, parsed by compiled code (onlinestore.resp_bulk) straight into
    byte matrices: no Python object per reply or value."""

    def __init__(self, connection: StreamingConnection):
        self._connection = connection
        self._buffer = np.empty(1 << 18, dtype=np.uint8)
        self._filled = self._pos = 0

    def hmget(self, count: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        cells = np.empty((count, width, _CELL_BYTES), dtype=np.uint8)
        lengths = np.zeros((count, width), dtype=np.int64)
        done = 0
        while True:
            self._pos, done, status = parse_hmget_replies(self._buffer, self._filled, self._pos, done, count, cells, lengths)
            if status == 1:
                line = self._buffer[self._pos + 1 : self._filled].tobytes().split(b"\r\n", 1)[0]
                raise redis.ResponseError(f"HMGET failed: {line.decode(errors='replace')}")
            if status == 2:
                raise redis.ResponseError("unexpected reply to HMGET (not an array of the requested fields)")
            if done == count:
                return cells, lengths
            if self._filled == len(self._buffer):
                self._buffer = np.concatenate([self._buffer, np.empty_like(self._buffer)])
            self._filled += self._connection.receive_into(memoryview(self._buffer)[self._filled :])
