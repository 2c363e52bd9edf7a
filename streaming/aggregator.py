"""Trailing-window aggregations per entity, event by event, derived from a view's declaration.

The twin of pipelines/windowed.py: the same declaration (core/windows.py), the same semantics,
the same floating-point order, so every row emitted here equals the Spark batch row of the same
(entity, instant) value for value (tests/test_stream_equals_batch.py).

State per entity: its instants within twice the largest window (the windows of rows a late event can
still change reach that far back), each with its event count, the sorted values of summed columns, the
values of distinct-counted columns, and the ids of its events (for de-duplication).
"""

from __future__ import annotations

import enum
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventlog.events import Event
from core.windows import WindowedFeature, WindowedView


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # an event id already applied (at-least-once delivery): ignored
    LATE = "late"  # older than the entity's newest event minus the allowed lateness: dead-lettered


@dataclass(frozen=True)
class Row:
    entity: Any
    micros: int
    features: tuple  # in the view's declaration order


class _Instant:
    __slots__ = ("micros", "count", "values", "sums", "distinct", "event_ids")

    def __init__(self, micros: int, summed: list[str], distinct: list[str]):
        self.micros = micros
        self.count = 0
        self.values: dict[str, list[float]] = {column: [] for column in summed}
        self.sums: dict[str, float] = {}
        self.distinct: dict[str, set] = {column: set() for column in distinct}
        self.event_ids: list[str] = []

    def add(self, event: Event) -> None:
        self.count += 1
        self.event_ids.append(event.event_id)
        for column, values in self.values.items():
            insort(values, float(event.values[column]))
            total = 0.0
            for value in values:  # ascending, from 0.0: Spark's aggregate(array_sort(...)) order
                total += value
            self.sums[column] = total
        for column, seen in self.distinct.items():
            seen.add(event.values[column])

    def __lt__(self, other: _Instant) -> bool:
        return self.micros < other.micros


class _EntityState:
    __slots__ = ("instants", "times", "event_ids")

    def __init__(self) -> None:
        self.instants: list[_Instant] = []
        self.times: list[int] = []  # instants' micros, for bisect
        self.event_ids: set[str] = set()


def _compiler(spec: WindowedView) -> Callable[[list[_Instant], list[int], int], tuple]:
    """A function (instants, times, index) -> the feature tuple of that instant."""

    def one(feature: WindowedFeature) -> Callable[[list[_Instant], list[int], int], Any]:
        width, column = feature.micros, feature.column
        function = feature.function
        if function == "count":
            def value(instants, times, j):
                return sum(i.count for i in instants[bisect_right(times, times[j] - width): j + 1])
        elif function == "sum":
            def value(instants, times, j):
                total = 0.0
                for instant in instants[bisect_right(times, times[j] - width): j + 1]:
                    total += instant.sums[column]
                return total
        elif function == "mean":
            def value(instants, times, j):
                total, count = 0.0, 0
                for instant in instants[bisect_right(times, times[j] - width): j + 1]:
                    total += instant.sums[column]
                    count += instant.count
                return total / count
        elif function == "count_distinct":
            def value(instants, times, j):
                return len(set().union(*(i.distinct[column] for i in instants[bisect_right(times, times[j] - width): j + 1])))
        elif function == "seconds_since_previous":
            def value(instants, times, j):
                first = bisect_right(times, times[j] - width)
                return (times[j] - times[j - 1]) / 1_000_000 if j - 1 >= first else None
        else:
            raise ValueError(f"feature {feature.name!r}: no stream implementation of {function!r}")
        return value

    functions = [one(feature) for feature in spec.features]

    def row(instants: list[_Instant], times: list[int], j: int) -> tuple:
        return tuple(function(instants, times, j) for function in functions)

    return row


class WindowAggregator:
    """Applies events in arrival order; each applied event yields the rows it changed (its instant, and
    for an out-of-order event the later instants whose windows it falls in)."""

    def __init__(self, spec: WindowedView):
        self.spec = spec
        self._largest = int(spec.largest_window.total_seconds()) * 1_000_000
        self._lateness = int(spec.allowed_lateness.total_seconds()) * 1_000_000
        self._summed = sorted({f.column for f in spec.features if f.function in ("sum", "mean")})
        self._distinct = sorted({f.column for f in spec.features if f.function == "count_distinct"})
        self._row = _compiler(spec)
        self._entities: dict[Any, _EntityState] = {}

    @property
    def entities(self) -> int:
        return len(self._entities)

    def apply(self, event: Event) -> tuple[Outcome, list[Row]]:
        state = self._entities.get(event.entity)
        if state is None:
            state = self._entities[event.entity] = _EntityState()
        if event.event_id in state.event_ids:
            return Outcome.DUPLICATE, []
        times = state.times
        if times and event.micros <= times[-1] - self._lateness:
            return Outcome.LATE, []
        j = bisect_left(times, event.micros)
        if j == len(times) or times[j] != event.micros:
            times.insert(j, event.micros)
            state.instants.insert(j, _Instant(event.micros, self._summed, self._distinct))
        state.instants[j].add(event)
        state.event_ids.add(event.event_id)
        # Rows of later instants whose windows reach back to this event change too.
        end = bisect_left(times, event.micros + self._largest)
        rows = [Row(event.entity, times[k], self._row(state.instants, times, k)) for k in range(j, end)]
        self._evict(state)
        return Outcome.APPLIED, rows

    def _evict(self, state: _EntityState) -> None:
        """Drop instants no row that can still change needs: older than newest - lateness - largest window."""
        keep_from = bisect_right(state.times, state.times[-1] - self._lateness - self._largest)
        if keep_from:
            for instant in state.instants[:keep_from]:
                state.event_ids.difference_update(instant.event_ids)
            del state.instants[:keep_from]
            del state.times[:keep_from]
