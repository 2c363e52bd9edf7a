"""Events on the log: how a record is written, partitioned and parsed (strictly, with a reason when not).

The event log is its own layer: producers (serving, replay) and the stream processor both sit above it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import mmh3

from core.windows import WindowedView

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Event:
    event_id: str
    entity: Any
    micros: int  # event time, microseconds since the epoch (UTC)
    values: Mapping[str, Any]  # the aggregated columns


class MalformedEvent(ValueError):
    """An event the processor cannot apply; its message is the dead-letter reason."""


def partition_of(entity: Any, partitions: int) -> int:
    """Every producer puts an entity's events on the same partition, so one processor sees them in order."""
    return mmh3.hash(str(entity), signed=False) % partitions


def format_timestamp(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"event timestamp {value!r} has no time zone")
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def encode_record(record: Mapping[str, Any]) -> dict[str, str]:
    """The log entry of one record (every field, as text; each windowed view reads the fields it needs)."""
    def text(value: Any) -> str:
        if isinstance(value, datetime):
            return format_timestamp(value)
        return repr(value) if isinstance(value, float) else str(value)

    return {name: text(value) for name, value in record.items() if value is not None}


def _text(fields: Mapping[Any, Any], name: str) -> str:
    value = fields.get(name, fields.get(name.encode()))
    if value is None:
        raise MalformedEvent(f"missing field {name!r}")
    return value.decode() if isinstance(value, bytes) else str(value)


def _micros(text: str, name: str) -> int:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedEvent(f"field {name!r}: not an ISO 8601 timestamp: {text[:64]!r}") from None
    if value.tzinfo is None:
        raise MalformedEvent(f"field {name!r}: timestamp without a time zone: {text[:64]!r}")
    return epoch_micros(value)


def epoch_micros(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exact (no float on the way)."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def _integer(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise MalformedEvent(f"field {name!r}: not an integer: {text[:64]!r}") from None
    if not -(2**63) <= value < 2**63:
        raise MalformedEvent(f"field {name!r}: outside INT64: {text[:64]!r}")
    return value


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MalformedEvent(f"field {name!r}: not a number: {text[:64]!r}") from None
    if not math.isfinite(value):
        raise MalformedEvent(f"field {name!r}: not finite: {text[:64]!r}")
    return value


def parse_event(fields: Mapping[Any, Any], spec: WindowedView) -> Event:
    """Event of a log entry, or MalformedEvent naming the field and what is wrong with it."""
    event_id = _text(fields, spec.event_id)
    if not event_id:
        raise MalformedEvent(f"field {spec.event_id!r}: empty event id")
    values: dict[str, Any] = {}
    summed = {f.column for f in spec.features if f.function in ("sum", "mean")}
    for column in spec.value_columns:
        text = _text(fields, column)
        values[column] = _number(text, column) if column in summed else text
    return Event(event_id, _integer(_text(fields, spec.entity_key), spec.entity_key),
                 _micros(_text(fields, spec.timestamp), spec.timestamp), values)
