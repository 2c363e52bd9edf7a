"""User velocity features on tiny hand-made frames with exact expected values."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from pipelines.raw import TRANSACTIONS
from pipelines.windowed import build_windowed_features

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 10)
NOON = datetime(2026, 11, 10, 12, 0, tzinfo=timezone.utc)
MICRO = timedelta(microseconds=1)
FEATURES = (
    "txn_count_1h", "txn_count_24h", "txn_count_7d",
    "amount_sum_1h", "amount_sum_24h", "amount_sum_7d", "amount_mean_7d",
    "distinct_merchants_24h", "seconds_since_prev_txn",
)


def _transactions(spark, rows):
    """rows: (user_id, merchant_id, amount, event_timestamp); txn ids are made up."""
    return spark.createDataFrame(
        [(f"t{i}", user, merchant, amount, "EUR", "DE", "pos", ts) for i, (user, merchant, amount, ts) in enumerate(rows)],
        schema=TRANSACTIONS.schema,
    )


def _velocity(spark, spec, rows) -> dict[tuple[int, datetime], tuple]:
    """(user_id, UTC event_timestamp) -> the feature values, in FEATURES order."""
    return {
        # Spark returns naive datetimes in the session time zone, which is UTC.
        (row.user_id, row.event_timestamp.replace(tzinfo=timezone.utc)): tuple(row[name] for name in FEATURES)
        for row in build_windowed_features(_transactions(spark, rows), spec, DAY).collect()
    }


def test_columns_names_types_and_order(spark, user_velocity_spec):
    frame = build_windowed_features(_transactions(spark, [(1, 10, 5.0, NOON)]), user_velocity_spec, DAY)
    assert [(field.name, field.dataType.simpleString()) for field in frame.schema.fields] == [
        ("user_id", "bigint"), ("event_timestamp", "timestamp"),
        ("txn_count_1h", "bigint"), ("txn_count_24h", "bigint"), ("txn_count_7d", "bigint"),
        ("amount_sum_1h", "double"), ("amount_sum_24h", "double"), ("amount_sum_7d", "double"),
        ("amount_mean_7d", "double"), ("distinct_merchants_24h", "bigint"), ("seconds_since_prev_txn", "double"),
    ]


def test_windows_exclude_exactly_w_back_and_include_w_minus_one_microsecond(spark, user_velocity_spec):
    hour, day, week = timedelta(hours=1), timedelta(days=1), timedelta(days=7)
    # One user per window: a transaction exactly W before noon, one a microsecond later, one at noon.
    rows = [
        (user, merchant, amount, NOON - offset)
        for user, length in ((1, hour), (2, day), (3, week))
        for merchant, amount, offset in ((10, 1.0, length), (11, 2.0, length - MICRO), (12, 4.0, timedelta(0)))
    ]
    at_noon = {user: values for (user, ts), values in _velocity(spark, user_velocity_spec, rows).items() if ts == NOON}
    assert at_noon == {
        1: (2, 3, 3, 6.0, 7.0, 7.0, 7.0 / 3, 3, 3_599_999_999 / 1_000_000),
        2: (1, 2, 3, 4.0, 6.0, 7.0, 7.0 / 3, 2, 86_399_999_999 / 1_000_000),
        3: (1, 1, 2, 4.0, 4.0, 6.0, 3.0, 1, 604_799_999_999 / 1_000_000),
    }


def test_user_with_one_transaction(spark, user_velocity_spec):
    assert _velocity(spark, user_velocity_spec, [(1, 10, 5.0, NOON)]) == {(1, NOON): (1, 1, 1, 5.0, 5.0, 5.0, 5.0, 1, None)}


def test_transactions_at_the_same_instant_are_one_row_and_merchants_are_counted_once(spark, user_velocity_spec):
    rows = [(1, 10, 1.0, NOON - timedelta(minutes=30)), (1, 10, 2.0, NOON), (1, 11, 3.0, NOON)]
    assert _velocity(spark, user_velocity_spec, rows) == {
        (1, NOON - timedelta(minutes=30)): (1, 1, 1, 1.0, 1.0, 1.0, 1.0, 1, None),
        (1, NOON): (3, 3, 3, 6.0, 6.0, 6.0, 2.0, 2, 1800.0),
    }


def test_only_partition_day_rows_are_output_but_look_back_rows_count(spark, user_velocity_spec):
    day_start = datetime(2026, 11, 10, tzinfo=timezone.utc)
    day_end = day_start + timedelta(days=1)
    rows = [
        (1, 10, 8.0, day_start - timedelta(days=3)),
        (1, 11, 4.0, day_start - MICRO),
        (1, 12, 2.0, day_start),
        (1, 10, 1.0, day_end - MICRO),
        (1, 10, 16.0, day_end),
        (2, 10, 3.0, day_start - timedelta(days=1)),
    ]
    assert _velocity(spark, user_velocity_spec, rows) == {
        (1, day_start): (2, 2, 3, 6.0, 6.0, 14.0, 14.0 / 3, 2, 1e-6),
        (1, day_end - MICRO): (1, 2, 4, 1.0, 3.0, 15.0, 3.75, 2, 86_399.999999),
    }
