"""The stream's rows equal the Spark batch rows, value for value, on random event streams: several
events at one instant, bursts, gaps longer than every window, out-of-order arrivals within the allowed
lateness, re-delivered events. Both implementations come from user_velocity's one declaration."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.raw import TRANSACTIONS
from pipelines.windowed import build_windowed_features
from eventlog.events import Event
from streaming.aggregator import Outcome, WindowAggregator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = datetime(2026, 11, 10, tzinfo=timezone.utc)
START_MICROS = int(START.timestamp()) * 1_000_000
SECOND = 1_000_000

# Gaps between one user's consecutive instants: same instant, bursts, minutes, hours, and longer than 7 days.
gaps = st.one_of(
    st.just(0),
    st.integers(1, 90 * SECOND),
    st.integers(1, 3 * 3600 * SECOND),
    st.sampled_from([3600 * SECOND, 3600 * SECOND - 1, 3600 * SECOND + 1, 86_400 * SECOND, 7 * 86_400 * SECOND]),
    st.integers(7 * 86_400 * SECOND, 9 * 86_400 * SECOND),
)
user_events = st.lists(st.tuples(gaps, st.integers(1, 4), st.sampled_from([0.01, 0.1, 0.2, 0.3, 1.5, 19.99, 250.0, 1e6 / 3])),
                       min_size=1, max_size=25)


@st.composite
def event_streams(draw):
    """(events in time order, arrival order as indices into them)."""
    events = []
    for user in range(1, draw(st.integers(1, 5)) + 1):
        micros = START_MICROS + draw(st.integers(0, 86_400 * SECOND))
        for gap, merchant, amount in draw(user_events):
            micros += gap
            events.append((f"u{user}-{len(events)}", user, merchant, amount, micros))
    events.sort(key=lambda e: (e[4], e[0]))
    arrival = list(range(len(events)))

    def latest_position(index: int, after: int) -> int:
        """The last position after `after` where event `index` still arrives within the allowed lateness:
        before any event of its user a largest window (7 days) or more newer."""
        limit = after
        while limit + 1 < len(arrival):
            later = events[arrival[limit + 1]]
            if later[1] == events[index][1] and later[4] >= events[index][4] + 7 * 86_400 * SECOND:
                break
            limit += 1
        return limit

    # Delay some events: each moves later in the arrival order, within the allowed lateness.
    for index in draw(st.lists(st.integers(0, len(events) - 1), max_size=len(events) // 2)):
        position = arrival.index(index)
        arrival.insert(draw(st.integers(position, latest_position(index, position))), arrival.pop(position))
    # At-least-once delivery: some events arrive twice, again within the allowed lateness.
    for index in draw(st.lists(st.integers(0, len(events) - 1), max_size=3)):
        position = arrival.index(index)
        arrival.insert(draw(st.integers(position, latest_position(index, position))) + 1, index)
    return events, arrival


def _timestamp(micros: int) -> datetime:
    return START + timedelta(microseconds=micros - START_MICROS)


def _micros(timestamp: datetime) -> int:
    # Spark hands back naive datetimes in the session time zone (UTC).
    return START_MICROS + (timestamp.replace(tzinfo=timezone.utc) - START) // timedelta(microseconds=1)


def _batch_rows(spark, spec, events) -> dict:
    frame = spark.createDataFrame(
        [(txn, user, merchant, amount, "EUR", "DE", "pos", _timestamp(micros)) for txn, user, merchant, amount, micros in events],
        schema=TRANSACTIONS.schema,
    )
    first = START.date()
    last = _timestamp(max(e[4] for e in events)).date()
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    result = build_windowed_features(frame, spec, days[0])
    for day in days[1:]:
        result = result.unionByName(build_windowed_features(frame, spec, day))
    return {
        (row[spec.entity_key], _micros(row[spec.timestamp])): tuple(row[name] for name in spec.feature_names)
        for row in result.collect()
    }


def _stream_rows(spec, events, arrival) -> tuple[dict, list[Outcome]]:
    aggregator = WindowAggregator(spec)
    emitted, outcomes = {}, []
    for index in arrival:
        txn, user, merchant, amount, micros = events[index]
        outcome, rows = aggregator.apply(Event(txn, user, micros, {"amount": amount, "merchant_id": merchant}))
        outcomes.append(outcome)
        for row in rows:  # a later emission of the same (entity, instant) supersedes the earlier one
            emitted[(row.entity, row.micros)] = row.features
    return emitted, outcomes


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=event_streams())
def test_stream_rows_equal_spark_batch_rows(spark, user_velocity_spec, stream):
    events, arrival = stream
    emitted, outcomes = _stream_rows(user_velocity_spec, events, arrival)
    assert Outcome.LATE not in outcomes
    assert outcomes.count(Outcome.DUPLICATE) == len(arrival) - len(events)
    assert emitted == _batch_rows(spark, user_velocity_spec, events)


def test_an_event_beyond_the_allowed_lateness_is_refused_and_changes_no_current_value(spark, user_velocity_spec):
    day = 86_400 * SECOND
    events = [("a", 1, 1, 5.0, START_MICROS), ("b", 1, 2, 7.0, START_MICROS + 8 * day), ("late", 1, 3, 9.0, START_MICROS + day)]
    emitted, outcomes = _stream_rows(user_velocity_spec, events, [0, 1, 2])
    assert outcomes == [Outcome.APPLIED, Outcome.APPLIED, Outcome.LATE]
    batch = _batch_rows(spark, user_velocity_spec, events)
    # The batch keeps the late event in its own day's history; the newest row, the one online, is equal.
    newest = (1, START_MICROS + 8 * day)
    assert emitted[newest] == batch[newest]
    assert (1, START_MICROS + day) in batch and (1, START_MICROS + day) not in emitted
