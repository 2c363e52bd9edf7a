"""Trailing-window aggregations per entity, event by event, derived from a view's declaration.

The twin of pipelines/windowed.py: the same declaration (core/windows.py), the same semantics,
the same floating-point order, so every row emitted here equals the Spark batch row of the same
(entity, instant) value for value (tests/test_stream_equals_batch.py).

State per entity: its instants within twice the largest window (the windows of rows a late event can
still change reach that far back), column by column: event counts, the sorted values and sums of summed
columns, the values of distinct-counted columns, and the ids of its events (for de-duplication). The
features of a row are one function compiled from the declaration (`_row_function`).
"""

from __future__ import annotations

import enum
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from functools import reduce
from operator import add
from dataclasses import dataclass
from typing import Any

from core.windows import WindowedView
from eventlog.events import Event


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # an event id already applied (at-least-once delivery): ignored
    LATE = "late"  # older than the entity's newest event minus the allowed lateness: dead-lettered


@dataclass(frozen=True)
class Row:
    entity: Any
    micros: int
    features: tuple  # in the view's declaration order


class _EntityState:
    """One entity's instants within the state horizon, column by column (parallel lists, time order)."""

    __slots__ = ("times", "counts", "values", "sums", "distinct", "ids", "event_ids")

    def __init__(self, summed: list[str], distinct: list[str]) -> None:
        self.times: list[int] = []  # micros, for bisect
        self.counts: list[int] = []  # events per instant
        self.values: dict[str, list[list[float]]] = {column: [] for column in summed}  # each instant's values, ascending
        self.sums: dict[str, list[float]] = {column: [] for column in summed}  # each instant's sum of them
        self.distinct: dict[str, list[set]] = {column: [] for column in distinct}
        self.ids: list[list[str]] = []  # event ids per instant (evicted with it)
        self.event_ids: set[str] = set()

    def add(self, event: Event) -> int:
        """Apply an event to its instant (created if new); returns the instant's index."""
        j = bisect_left(self.times, event.micros)
        if j == len(self.times) or self.times[j] != event.micros:
            self.times.insert(j, event.micros)
            self.counts.insert(j, 0)
            self.ids.insert(j, [])
            for column in self.values:
                self.values[column].insert(j, [])
                self.sums[column].insert(j, 0.0)
            for column in self.distinct:
                self.distinct[column].insert(j, set())
        self.counts[j] += 1
        self.ids[j].append(event.event_id)
        self.event_ids.add(event.event_id)
        for column, values in self.values.items():
            insort(values[j], float(event.values[column]))
            # Ascending, from 0.0: Spark's aggregate(array_sort(collect_list(...)), 0D, +) order.
            self.sums[column][j] = reduce(add, values[j], 0.0)
        for column, seen in self.distinct.items():
            seen[j].add(event.values[column])
        return j

    def evict_before(self, micros: int) -> None:
        keep_from = bisect_right(self.times, micros)
        if keep_from:
            for ids in self.ids[:keep_from]:
                self.event_ids.difference_update(ids)
            for column in (self.times, self.counts, self.ids, *self.values.values(), *self.sums.values(), *self.distinct.values()):
                del column[:keep_from]


def _row_function(spec: WindowedView) -> Callable[[_EntityState, int], tuple]:
    """Compile the view's features into one function (state, instant index) -> feature tuple.

    Generated from the declaration so each distinct window's start is searched once per row and every
    feature is one expression over the state's columns: the same arithmetic as the Spark frames
    (windows (t - w, t]; float sums left to right from 0.0, as Spark's Sum adds a frame's rows)."""
    windows = sorted({feature.micros for feature in spec.features})
    start = {width: f"lo{index}" for index, width in enumerate(windows)}
    lines = ["def row(state, j):", "    times = state.times", "    t = times[j]", "    end = j + 1", "    counts = state.counts"]
    lines += [f"    {name} = bisect_right(times, t - {width})" for width, name in start.items()]
    expressions = []
    for feature in spec.features:
        lo, column = start[feature.micros], feature.column
        if feature.function == "count":
            expressions.append(f"sum(counts[{lo}:end])")
        elif feature.function == "sum":
            expressions.append(f"reduce(add, state.sums[{column!r}][{lo}:end], 0.0)")
        elif feature.function == "mean":
            expressions.append(f"reduce(add, state.sums[{column!r}][{lo}:end], 0.0) / sum(counts[{lo}:end])")
        elif feature.function == "count_distinct":
            expressions.append(f"len(set().union(*state.distinct[{column!r}][{lo}:end]))")
        elif feature.function == "seconds_since_previous":
            # The previous instant inside (t - w, t): its index is j - 1 when that is within the window.
            expressions.append(f"((t - times[j - 1]) / 1_000_000 if j - 1 >= {lo} else None)")
        else:
            raise ValueError(f"feature {feature.name!r}: no stream implementation of {feature.function!r}")
    lines.append("    return (" + ", ".join(expressions) + ",)")
    namespace = {"bisect_right": bisect_right, "reduce": reduce, "add": add}
    exec(compile("\n".join(lines), f"<windows of {spec.view}>", "exec"), namespace)  # noqa: S102 (our own declaration)
    return namespace["row"]


class WindowAggregator:
    """Applies events in arrival order; each applied event yields the rows it changed (its instant, and
    for an out-of-order event the later instants whose windows it falls in)."""

    def __init__(self, spec: WindowedView):
        self.spec = spec
        self._largest = int(spec.largest_window.total_seconds()) * 1_000_000
        self._lateness = int(spec.allowed_lateness.total_seconds()) * 1_000_000
        self._summed = sorted({f.column for f in spec.features if f.function in ("sum", "mean")})
        self._distinct = sorted({f.column for f in spec.features if f.function == "count_distinct"})
        self._row = _row_function(spec)
        self._entities: dict[Any, _EntityState] = {}

    @property
    def entities(self) -> int:
        return len(self._entities)

    def apply(self, event: Event) -> tuple[Outcome, list[Row]]:
        state = self._entities.get(event.entity)
        if state is None:
            state = self._entities[event.entity] = _EntityState(self._summed, self._distinct)
        if event.event_id in state.event_ids:
            return Outcome.DUPLICATE, []
        times = state.times
        if times and event.micros <= times[-1] - self._lateness:
            return Outcome.LATE, []
        j = state.add(event)
        # Rows of later instants whose windows reach back to this event change too.
        end = bisect_left(times, event.micros + self._largest)
        rows = [Row(event.entity, times[k], self._row(state, k)) for k in range(j, end)]
        # Instants no row that can still change needs: older than newest - lateness - largest window.
        state.evict_before(times[-1] - self._lateness - self._largest)
        return Outcome.APPLIED, rows
