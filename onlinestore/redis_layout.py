"""Feast's Redis online-store layout (entity_key_serialization_version 3), encoded without Feast.

One Redis hash per entity:
    key    = serialized entity key (v3) + project name (utf-8)
    fields = murmur3_32("{view}:{feature}") as 4 little-endian bytes -> serialized feast.types.Value
             b"_ts:{view}"                                          -> serialized google.protobuf.Timestamp
A null feature value is an empty Value message (b""), which Feast's reader turns into None; Feast also
writes NaN floats as null.

Two encoders of the same bytes: scalar ones (one value at a time: readers, tests) and columnar ones
that encode a whole arrow column at once into a `Ragged` byte array with numpy, because building one
protobuf object per value is what makes Feast's materialization slow. No Feast import at module level
(`import feast` costs seconds); only `layout_from_feature_view` imports it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import mmh3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from feast import FeatureView

# feast.types.Value oneof field numbers; a tag byte is (field_number << 3) | wire_type.
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_VALUE_FIELDS: dict[str, tuple[int, int]] = {
    "string": (2, _LENGTH_DELIMITED),
    "int32": (3, _VARINT),
    "int64": (4, _VARINT),
    "double": (5, _FIXED64),
    "float": (6, _FIXED32),
    "bool": (7, _VARINT),
}
VALUE_TYPES = tuple(_VALUE_FIELDS)
_TAGS = {value_type: (number << 3) | wire for value_type, (number, wire) in _VALUE_FIELDS.items()}
_NULL_VAL_FIELD = 19  # Value.null_val: Feast itself writes an empty message for nulls, but may read this

# feast.types.ValueType enum numbers, used inside serialized entity keys.
_ENTITY_KEY_TYPE_IDS = {"string": 2, "int32": 3, "int64": 4}

# google.protobuf.Timestamp: seconds = field 1, nanos = field 2, both varints, omitted when zero.
_TS_SECONDS_TAG, _TS_NANOS_TAG = 0x08, 0x10


@dataclass(frozen=True)
class ViewLayout:
    """What the online layout of one feature view depends on. Value types are names from VALUE_TYPES."""

    name: str
    join_keys: tuple[tuple[str, str], ...]
    features: tuple[tuple[str, str], ...]
    ttl: timedelta | None = None

    def __post_init__(self) -> None:
        for join_key, value_type in self.join_keys:
            if value_type not in _ENTITY_KEY_TYPE_IDS:
                raise ValueError(f"view {self.name}: join key {join_key!r} has unsupported type {value_type!r}")
        for feature, value_type in self.features:
            if value_type not in _VALUE_FIELDS:
                raise ValueError(f"view {self.name}: feature {feature!r} has unsupported type {value_type!r}")

    @property
    def ts_field(self) -> bytes:
        return timestamp_field(self.name)

    def feature_fields(self) -> list[bytes]:
        return [feature_field(self.name, feature) for feature, _ in self.features]


def layout_from_feature_view(fv: FeatureView, entity_value_types: dict[str, Any]) -> ViewLayout:
    """ViewLayout of a Feast FeatureView. `entity_value_types` maps join key -> feast ValueType (or our
    type name), since a FeatureView only knows its entities by name."""
    from feast.value_type import ValueType

    def type_name(value_type: Any) -> str:
        if isinstance(value_type, str):
            return value_type
        if not isinstance(value_type, ValueType):  # a feast.types dtype such as Int64
            value_type = value_type.to_value_type()
        return value_type.name.lower()

    join_keys = tuple((key, type_name(entity_value_types[key])) for key in fv.join_keys)
    features = tuple((field.name, type_name(field.dtype)) for field in fv.features)
    return ViewLayout(name=fv.name, join_keys=join_keys, features=features, ttl=fv.ttl or None)


# ---------------------------------------------------------------------------------------------------
# Keys and fields


def feature_field(view: str, feature: str) -> bytes:
    """Hash field of a feature: unsigned murmur3_32 of "{view}:{feature}", 4 bytes little-endian."""
    return mmh3.hash(f"{view}:{feature}", signed=False).to_bytes(4, "little")


def timestamp_field(view: str) -> bytes:
    return f"_ts:{view}".encode()


def _sorted_join_keys(join_keys: dict[str, Any]) -> list[str]:
    # Feast orders the key parts by join key name.
    return sorted(join_keys)


def serialize_entity_key(join_keys: dict[str, Any], value_types: dict[str, str]) -> bytes:
    """Feast's serialize_entity_key v3 of {join key: value}: count, then every name, then every value."""
    names = _sorted_join_keys(join_keys)
    parts = [struct.pack("<I", len(names))]
    for name in names:
        encoded = name.encode()
        parts.append(struct.pack("<II", _ENTITY_KEY_TYPE_IDS["string"], len(encoded)) + encoded)
    for name in names:
        value, value_type = join_keys[name], value_types[name]
        if value is None:
            raise ValueError(f"join key {name!r} is null")
        if value_type == "string":
            payload = value.encode()
        else:
            payload = struct.pack("<q" if value_type == "int64" else "<i", value)
        parts.append(struct.pack("<II", _ENTITY_KEY_TYPE_IDS[value_type], len(payload)) + payload)
    return b"".join(parts)


def redis_key(project: str, entity_key: bytes) -> bytes:
    return entity_key + project.encode()


# ---------------------------------------------------------------------------------------------------
# Scalar protobuf encoding


def _varint(value: int) -> bytes:
    value &= 0xFFFF_FFFF_FFFF_FFFF  # negative ints are 10-byte two's complement varints
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def encode_value(value: Any, value_type: str) -> bytes:
    """Serialized feast.types.Value, byte-identical to Feast's (None and NaN -> empty message)."""
    if _is_null(value):
        return b""
    tag = bytes([_TAGS[value_type]])
    if value_type == "string":
        encoded = value.encode()
        return tag + _varint(len(encoded)) + encoded
    if value_type == "double":
        return tag + struct.pack("<d", value)
    if value_type == "float":
        return tag + struct.pack("<f", value)
    return tag + _varint(int(value))


def decode_value(data: bytes | None) -> Any:
    """Python value of a serialized feast.types.Value (of the types we write); empty/null -> None."""
    if not data:
        return None
    tag, pos = _read_varint(data, 0)
    number, wire = tag >> 3, tag & 7
    if number == _NULL_VAL_FIELD:
        return None
    if wire == _FIXED64:
        return struct.unpack_from("<d", data, pos)[0]
    if wire == _FIXED32:
        return struct.unpack_from("<f", data, pos)[0]
    if wire == _LENGTH_DELIMITED:
        length, pos = _read_varint(data, pos)
        return data[pos : pos + length].decode()
    raw, _ = _read_varint(data, pos)
    if number == _VALUE_FIELDS["bool"][0]:
        return bool(raw)
    return raw - (1 << 64) if raw >= 1 << 63 else raw  # int32 and int64 are sign-extended to 64 bits


def encode_timestamp(epoch_nanos: int) -> bytes:
    """Serialized google.protobuf.Timestamp (Feast stores microsecond precision: nanos are truncated)."""
    seconds, nanos = divmod(epoch_nanos // 1000 * 1000, 1_000_000_000)
    out = b""
    if seconds:
        out += bytes([_TS_SECONDS_TAG]) + _varint(seconds)
    if nanos:
        out += bytes([_TS_NANOS_TAG]) + _varint(nanos)
    return out


def decode_timestamp(data: bytes | None) -> int:
    """Epoch nanoseconds of a serialized google.protobuf.Timestamp; missing -> 0 (as Feast reads it)."""
    seconds = nanos = 0
    pos = 0
    while data and pos < len(data):
        tag, pos = _read_varint(data, pos)
        raw, pos = _read_varint(data, pos)
        if raw >= 1 << 63:
            raw -= 1 << 64
        if tag == _TS_SECONDS_TAG:
            seconds = raw
        elif tag == _TS_NANOS_TAG:
            nanos = raw
    return seconds * 1_000_000_000 + nanos


# ---------------------------------------------------------------------------------------------------
# Columnar encoding


@dataclass(frozen=True)
class Ragged:
    """n byte strings packed back to back: row i is data[offsets[i]:offsets[i+1]], offsets[0] == 0 and
    offsets[-1] == len(data) (so the bytes of consecutive rows are simply `data`)."""

    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64, n + 1 entries

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_rows(cls, matrix: np.ndarray, lengths: np.ndarray) -> Ragged:
        """Row i = the first lengths[i] bytes of matrix[i]."""
        keep = np.arange(matrix.shape[1]) < lengths[:, None]
        return cls(matrix[keep], _offsets(lengths))

    @classmethod
    def constant(cls, value: bytes, n: int) -> Ragged:
        return cls(np.tile(np.frombuffer(value, np.uint8), n), np.arange(n + 1, dtype=np.int64) * len(value))

    def take(self, rows: np.ndarray) -> Ragged:
        lengths = self.lengths[rows]
        return Ragged(self.data[_byte_positions(self.offsets[rows], lengths)], _offsets(lengths))

    def to_bytes(self) -> bytes:
        return self.data.tobytes()

    def to_list(self) -> list[bytes]:
        buffer, bounds = self.data.tobytes(), self.offsets.tolist()
        return [buffer[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _byte_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of range(starts[i], starts[i] + lengths[i]) over all rows."""
    lengths = lengths.astype(np.int64)
    total = int(lengths.sum())
    shift = np.repeat(starts.astype(np.int64) - (_offsets(lengths)[:-1]), lengths)
    return shift + np.arange(total, dtype=np.int64)


def concat_rows(parts: list[Ragged | bytes], n: int) -> Ragged:
    """Row-wise concatenation: row i = parts[0][i] + parts[1][i] + ...; a bytes part is the same in every row."""
    merged: list[Ragged | bytes] = []
    for part in parts:  # adjacent constants become one, so each costs one scatter
        if isinstance(part, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += part
        else:
            merged.append(part)
    lengths = [np.full(n, len(p), np.int64) if isinstance(p, bytes) else p.lengths for p in merged]
    offsets = _offsets(np.sum(lengths, axis=0) if lengths else np.zeros(n, np.int64))
    out = np.empty(int(offsets[-1]), dtype=np.uint8)
    row_position = offsets[:-1].copy()
    for part, part_lengths in zip(merged, lengths):
        if isinstance(part, bytes):
            positions = row_position[:, None] + np.arange(len(part))
            out[positions.ravel()] = np.tile(np.frombuffer(part, np.uint8), n)
        else:
            out[_byte_positions(row_position, part_lengths)] = part.data
        row_position += part_lengths
    return Ragged(out, offsets)


def _varint_rows(values: np.ndarray, tag: int, present: np.ndarray) -> Ragged:
    """tag byte + varint of each int64 value; empty where not present."""
    unsigned = values.astype(np.int64).view(np.uint64)
    size = 1 + sum((unsigned >= np.uint64(1 << (7 * k))).astype(np.int64) for k in range(1, 10))
    matrix = np.empty((len(values), 11), dtype=np.uint8)
    matrix[:, 0] = tag
    for k in range(10):
        group = ((unsigned >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        matrix[:, k + 1] = np.where(k < size - 1, group | 0x80, group)
    return Ragged.from_rows(matrix, np.where(present, size + 1, 0))


def _fixed_rows(raw: np.ndarray, tag: int, present: np.ndarray) -> Ragged:
    """tag byte + the little-endian bytes of each value; empty where not present."""
    width = raw.dtype.itemsize
    matrix = np.empty((len(raw), width + 1), dtype=np.uint8)
    matrix[:, 0] = tag
    matrix[:, 1:] = raw.view(np.uint8).reshape(len(raw), width)
    return Ragged.from_rows(matrix, np.where(present, width + 1, 0))


def _string_payload(column: pa.Array) -> Ragged:
    """UTF-8 bytes of each string (nulls empty)."""
    column = pc.fill_null(column.cast(pa.large_string()), "")
    _, offsets_buffer, data_buffer = column.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64)[column.offset : column.offset + len(column) + 1]
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return Ragged(data[offsets[0] : offsets[-1]], offsets - offsets[0])


def _as_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def encode_value_column(column: pa.Array | pa.ChunkedArray, value_type: str) -> Ragged:
    """encode_value of every row of an arrow column, vectorized."""
    column = _as_array(column)
    present = column.is_valid().to_numpy(zero_copy_only=False)
    tag = _TAGS[value_type]
    if value_type == "string":
        payload = _string_payload(column)
        return concat_rows([_varint_rows(payload.lengths, tag, present), payload], len(column))
    if value_type == "bool":
        values = pc.fill_null(column.cast(pa.bool_()), False).to_numpy(zero_copy_only=False).astype(np.int64)
        return _varint_rows(values, tag, present)
    if value_type in ("double", "float"):
        dtype = "<f8" if value_type == "double" else "<f4"
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(dtype)
        return _fixed_rows(values, tag, present & ~np.isnan(values))
    values = pc.fill_null(column.cast(pa.int64()), 0).to_numpy()
    return _varint_rows(values, tag, present)


def epoch_nanos(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """int64 epoch nanoseconds of a timestamp column (naive timestamps are UTC, as in Feast)."""
    column = _as_array(column)
    if column.null_count:
        raise ValueError(f"timestamp column has {column.null_count} null(s)")
    return column.cast(pa.timestamp("ns", tz=column.type.tz)).cast(pa.int64()).to_numpy()


def encode_timestamp_column(nanos: np.ndarray) -> Ragged:
    """encode_timestamp of every value, vectorized."""
    seconds, rest = np.divmod(nanos // 1000 * 1000, 1_000_000_000)
    return concat_rows(
        [_varint_rows(seconds, _TS_SECONDS_TAG, seconds != 0), _varint_rows(rest, _TS_NANOS_TAG, rest != 0)],
        len(nanos),
    )


def encode_entity_key_column(table: pa.Table, join_keys: tuple[tuple[str, str], ...]) -> Ragged:
    """serialize_entity_key of every row of `table`'s join key columns, vectorized."""
    n = table.num_rows
    value_types = dict(join_keys)
    names = _sorted_join_keys(value_types)
    parts: list[Ragged | bytes] = [struct.pack("<I", len(names))]
    for name in names:
        encoded = name.encode()
        parts.append(struct.pack("<II", _ENTITY_KEY_TYPE_IDS["string"], len(encoded)) + encoded)
    for name in names:
        column = _as_array(table.column(name))
        if column.null_count:
            row = pc.index(column.is_null(), True).as_py()
            raise ValueError(f"join key {name!r} is null in row {row}")
        value_type = value_types[name]
        type_id = struct.pack("<I", _ENTITY_KEY_TYPE_IDS[value_type])
        if value_type == "string":
            payload = _string_payload(column)
            length_bytes = payload.lengths.astype("<u4").view(np.uint8).reshape(n, 4)
            parts += [type_id, Ragged.from_rows(length_bytes, np.full(n, 4)), payload]
        else:
            dtype = "<i8" if value_type == "int64" else "<i4"
            raw = column.cast(pa.int64()).to_numpy().astype(dtype).view(np.uint8).reshape(n, -1)
            parts += [type_id + struct.pack("<I", raw.shape[1]), Ragged.from_rows(raw, np.full(n, raw.shape[1]))]
    return concat_rows(parts, n)
