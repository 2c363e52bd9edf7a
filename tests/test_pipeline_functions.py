"""Feature pipeline functions on small hand-made frames with exact expected values."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from core.feast_repo import view_module
from core.settings import FEATURE_REPO_DIR
from pipelines.raw import CHARGEBACKS, MERCHANTS, TRANSACTIONS
from pipelines.windowed import build_windowed_features

pytestmark = pytest.mark.integration

# merchant_risk's pipeline functions live in its view module, feature_repo/feature_views/merchant_risk.py.
_merchant_risk = view_module(FEATURE_REPO_DIR, "merchant_risk")
build_merchant_risk, snapshot_time = _merchant_risk.build_merchant_risk, _merchant_risk.snapshot_time

DAY = date(2026, 11, 10)
NOON = datetime(2026, 11, 10, 12, 0, tzinfo=timezone.utc)
MICRO = timedelta(microseconds=1)


def _txns(spark, rows):
    """rows: (txn_id, user_id, merchant_id, amount, event_timestamp)."""
    return spark.createDataFrame(
        [(t, u, m, a, "EUR", "DE", "pos", ts) for t, u, m, a, ts in rows], schema=TRANSACTIONS.schema
    )


def _utc(row) -> dict:
    # Spark hands back naive datetimes in the session time zone (UTC).
    return {**row.asDict(), "event_timestamp": row.event_timestamp.replace(tzinfo=timezone.utc)}


def _velocity(spark, spec, rows, day=DAY):
    return {(r["user_id"], r["event_timestamp"]): r for r in map(_utc, build_windowed_features(_txns(spark, rows), spec, day).collect())}


def test_velocity_columns_and_types(spark, user_velocity_spec):
    frame = build_windowed_features(_txns(spark, [("a", 1, 10, 5.0, NOON)]), user_velocity_spec, DAY)
    assert [(f.name, f.dataType.simpleString()) for f in frame.schema.fields] == [
        ("user_id", "bigint"), ("event_timestamp", "timestamp"),
        ("txn_count_1h", "bigint"), ("txn_count_24h", "bigint"), ("txn_count_7d", "bigint"),
        ("amount_sum_1h", "double"), ("amount_sum_24h", "double"), ("amount_sum_7d", "double"),
        ("amount_mean_7d", "double"), ("distinct_merchants_24h", "bigint"), ("seconds_since_prev_txn", "double"),
    ]


def test_user_with_one_transaction(spark, user_velocity_spec):
    row = _velocity(spark, user_velocity_spec, [("a", 1, 10, 5.0, NOON)])[(1, NOON)]
    assert (row["txn_count_1h"], row["txn_count_24h"], row["txn_count_7d"]) == (1, 1, 1)
    assert (row["amount_sum_1h"], row["amount_mean_7d"], row["distinct_merchants_24h"]) == (5.0, 5.0, 1)
    assert row["seconds_since_prev_txn"] is None


@pytest.mark.parametrize(("window", "length"), [("1h", timedelta(hours=1)), ("24h", timedelta(days=1)), ("7d", timedelta(days=7))])
def test_window_edges_exclude_exactly_w_and_include_w_minus_a_microsecond(spark, window, length, user_velocity_spec):
    rows = [
        ("edge_out", 1, 10, 1.0, NOON - length),
        ("edge_in", 1, 11, 2.0, NOON - length + MICRO),
        ("now", 1, 12, 4.0, NOON),
    ]
    row = _velocity(spark, user_velocity_spec, rows)[(1, NOON)]
    assert row[f"txn_count_{window}"] == 2
    assert row[f"amount_sum_{window}"] == 6.0


def test_same_instant_transactions_are_one_row_and_merchants_are_distinct(spark, user_velocity_spec):
    rows = [
        ("a", 1, 10, 1.0, NOON - timedelta(minutes=30)),
        ("b", 1, 10, 2.0, NOON),
        ("c", 1, 11, 3.0, NOON),
    ]
    result = _velocity(spark, user_velocity_spec, rows)
    assert len(result) == 2
    row = result[(1, NOON)]
    assert (row["txn_count_1h"], row["amount_sum_1h"], row["distinct_merchants_24h"]) == (3, 6.0, 2)
    assert row["amount_mean_7d"] == 2.0
    assert row["seconds_since_prev_txn"] == 1800.0


def test_only_the_partition_day_is_output_but_lookback_counts(spark, user_velocity_spec):
    yesterday = NOON - timedelta(days=1)
    tomorrow = NOON + timedelta(days=1)
    rows = [("old", 1, 10, 10.0, yesterday), ("today", 1, 10, 1.0, NOON), ("next", 1, 10, 1.0, tomorrow), ("other", 2, 10, 1.0, NOON)]
    result = _velocity(spark, user_velocity_spec, rows)
    assert sorted(result) == [(1, NOON), (2, NOON)]
    assert result[(1, NOON)]["txn_count_7d"] == 2 and result[(1, NOON)]["txn_count_24h"] == 1
    assert result[(1, NOON)]["seconds_since_prev_txn"] == 86400.0
    assert result[(2, NOON)]["txn_count_7d"] == 1


def _risk(spark, txns, chargebacks, merchants=((10, NOON - timedelta(days=100)),)):
    chargeback_frame = spark.createDataFrame(
        [(t, 1, 10, ts, reported) for t, ts, reported in chargebacks], schema=CHARGEBACKS.schema
    )
    merchant_frame = spark.createDataFrame([(m, created, "grocery", "DE") for m, created in merchants], schema=MERCHANTS.schema)
    return {r["merchant_id"]: r for r in map(_utc, build_merchant_risk(_txns(spark, txns), chargeback_frame, merchant_frame, DAY).collect())}


def test_merchant_risk_counts_only_labels_known_at_the_snapshot(spark):
    snapshot = snapshot_time(DAY)
    two_days_ago = NOON - timedelta(days=2)
    txns = [("a", 1, 10, 10.0, two_days_ago), ("b", 1, 10, 20.0, two_days_ago), ("c", 1, 10, 30.0, NOON), ("d", 1, 10, 40.0, NOON)]
    chargebacks = [
        ("a", two_days_ago, snapshot),                # reported exactly at the snapshot: known
        ("b", two_days_ago, snapshot + MICRO),        # reported a microsecond later: not known yet
        ("c", NOON, NOON + timedelta(hours=1)),       # known
    ]
    row = _risk(spark, txns, chargebacks)[10]
    assert row["event_timestamp"] == snapshot
    assert (row["txn_count_1d"], row["txn_count_30d"], row["amount_sum_30d"]) == (2, 4, 100.0)
    assert (row["chargeback_count_30d"], row["chargeback_rate_30d"]) == (2, 0.5)
    assert row["merchant_age_days"] == pytest.approx(100 + 0.5 - 1 / 86_400_000_000)


def test_merchant_risk_window_is_30_days_and_idle_merchants_get_no_row(spark):
    snapshot = snapshot_time(DAY)
    txns = [
        ("in", 1, 10, 1.0, snapshot - timedelta(days=30) + MICRO),
        ("out", 1, 10, 1.0, snapshot - timedelta(days=30)),
        ("idle", 1, 11, 1.0, snapshot - timedelta(days=31)),
    ]
    result = _risk(spark, txns, [], merchants=((10, NOON), (11, NOON)))
    assert sorted(result) == [10]
    assert (result[10]["txn_count_30d"], result[10]["txn_count_1d"], result[10]["chargeback_rate_30d"]) == (1, 0, 0.0)


def test_the_windowed_pipeline_reads_as_many_days_back_as_its_largest_window(user_velocity_spec):
    from pipelines.windowed import windowed_pipeline

    assert user_velocity_spec.largest_window == timedelta(days=7)
    assert windowed_pipeline(user_velocity_spec).inputs == {"transactions": 7}
