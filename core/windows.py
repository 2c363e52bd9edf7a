"""Windowed aggregations declared once, on the Feast feature view, and read back from it.

A feature view whose features are trailing-window aggregations of an event table declares each one as
a Feast `Field` built by `windowed_field` (the aggregation lives in the field's tags), and carries the
view tags `stream_source` (the raw event table) and `stream_event_id` (the event id column). Both
implementations are derived from that declaration: the Spark batch pipeline (pipelines/windowed.py)
and the stream processor (streaming/aggregator.py). Adding a windowed feature is one `windowed_field`
line on the view: it then appears in batch, stream, expectation suite, online store and catalog.

Semantics, shared by both paths (the property test in tests/test_stream_equals_batch.py holds them to it):
- events of one entity at the same instant are one observation; a row is emitted per (entity, instant);
- a window of length w at instant t covers the instants in (t - w, t], so it includes t itself;
- `sum` adds each instant's values in ascending order, then the instants' sums in time order
  (floating-point addition is not associative: a fixed order makes both paths bit-identical);
- `mean` is the window's `sum` of the column divided by its event count;
- `count_distinct` counts the distinct values of the column in the window;
- `seconds_since_previous` is t minus the entity's previous instant inside (t - w, t), else null.
Lateness: an event may arrive out of order as long as it is no older than its entity's newest event
minus the largest window (the allowed lateness). Such an event can change no value the online store
holds now or later, so the stream sends it to its dead-letter log (reason `late`) instead of applying
it, while the batch path keeps it in its own day's offline rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from core.feast_repo import FIELD_TAG_NULLABLE

if TYPE_CHECKING:
    from feast import FeatureView, Field

# aggregation -> (needs a column, Feast type name of the result)
AGGREGATIONS: dict[str, tuple[bool, str]] = {
    "count": (False, "Int64"),
    "sum": (True, "Float64"),
    "mean": (True, "Float64"),
    "count_distinct": (True, "Int64"),
    "seconds_since_previous": (False, "Float64"),
}
# Aggregations without a value for some rows: nothing before the first event of the window.
NULLABLE_AGGREGATIONS = frozenset({"seconds_since_previous"})
TAG_AGGREGATION = "aggregation"
TAG_COLUMN = "aggregation_column"
TAG_WINDOW = "window"
VIEW_TAG_SOURCE = "stream_source"
VIEW_TAG_EVENT_ID = "stream_event_id"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_window(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"window {text!r}: expected a positive <number><s|m|h|d>, e.g. 1h or 7d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def format_window(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def days_covering(window: timedelta) -> int:
    """Whole days before a day that a window ending on that day can reach."""
    return -(-int(window.total_seconds()) // 86_400)


def _describe(function: str, column: str | None, window: str) -> str:
    span = f"the last {format_window(parse_window(window))}"
    return {
        "count": f"Events in {span}.",
        "sum": f"Sum of {column} over {span}.",
        "mean": f"Mean {column} per event over {span}.",
        "count_distinct": f"Distinct {column} values in {span}.",
        "seconds_since_previous": f"Seconds since the previous event within {span} (null if none).",
    }[function]


def windowed_field(name: str, function: str, window: str, column: str | None = None, description: str | None = None) -> Field:
    """A Feast Field computed as the trailing-window aggregation `function` of `column` over `window`."""
    from feast import Field
    from feast.types import Float64, Int64

    if function not in AGGREGATIONS:
        raise ValueError(f"feature {name!r}: unknown aggregation {function!r} (one of {sorted(AGGREGATIONS)})")
    needs_column, type_name = AGGREGATIONS[function]
    if needs_column != (column is not None):
        raise ValueError(f"feature {name!r}: aggregation {function!r} {'needs' if needs_column else 'takes no'} column")
    parse_window(window)
    tags = {TAG_AGGREGATION: function, TAG_WINDOW: window, **({TAG_COLUMN: column} if column else {}),
            **({FIELD_TAG_NULLABLE: "true"} if function in NULLABLE_AGGREGATIONS else {})}
    return Field(name=name, dtype={"Int64": Int64, "Float64": Float64}[type_name],
                 description=description or _describe(function, column, window), tags=tags)


@dataclass(frozen=True)
class WindowedFeature:
    name: str
    function: str
    window: timedelta
    column: str | None = None

    @property
    def micros(self) -> int:
        return int(self.window.total_seconds()) * 1_000_000

    @property
    def value_type(self) -> str:
        return AGGREGATIONS[self.function][1]


@dataclass(frozen=True)
class WindowedView:
    """The windowed aggregations of one feature view over one event table."""

    view: str
    entity_key: str
    source_table: str
    event_id: str
    features: tuple[WindowedFeature, ...]
    timestamp: str = "event_timestamp"

    @property
    def largest_window(self) -> timedelta:
        return max(feature.window for feature in self.features)

    @property
    def allowed_lateness(self) -> timedelta:
        return self.largest_window

    @property
    def lookback_days(self) -> int:
        """Whole days of events before a partition's day that its windows can reach."""
        return days_covering(self.largest_window)

    @property
    def value_columns(self) -> list[str]:
        """Event columns the aggregations read, in declaration order."""
        return list(dict.fromkeys(f.column for f in self.features if f.column))

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    @classmethod
    def from_feature_view(cls, view: Any, entity_key: str) -> WindowedView:
        """Read the declaration off a Feast FeatureView (as defined in feature_repo/ or from the registry)."""
        features = []
        for field in view.features:
            tags = field.tags or {}
            if TAG_AGGREGATION not in tags:
                raise ValueError(f"view {view.name!r}: feature {field.name!r} is not a windowed_field")
            features.append(WindowedFeature(field.name, tags[TAG_AGGREGATION], parse_window(tags[TAG_WINDOW]), tags.get(TAG_COLUMN)))
        missing = [tag for tag in (VIEW_TAG_SOURCE, VIEW_TAG_EVENT_ID) if tag not in view.tags]
        if missing:
            raise ValueError(f"view {view.name!r}: windowed views need the tag(s) {missing}")
        return cls(view.name, entity_key, view.tags[VIEW_TAG_SOURCE], view.tags[VIEW_TAG_EVENT_ID], tuple(features))


def is_windowed(view: FeatureView) -> bool:
    return VIEW_TAG_SOURCE in view.tags
