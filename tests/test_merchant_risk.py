"""Merchant risk snapshots on tiny hand-made frames with exact expected values."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from core.feast_repo import view_module
from core.settings import FEATURE_REPO_DIR
from pipelines.raw import CHARGEBACKS, MERCHANTS, TRANSACTIONS

pytestmark = pytest.mark.integration

# merchant_risk's pipeline functions live in its view module, feature_repo/feature_views/merchant_risk.py.
_merchant_risk = view_module(FEATURE_REPO_DIR, "merchant_risk")
build_merchant_risk, snapshot_time = _merchant_risk.build_merchant_risk, _merchant_risk.snapshot_time

DAY = date(2026, 11, 10)
SNAPSHOT = datetime(2026, 11, 10, 23, 59, 59, 999999, tzinfo=timezone.utc)
DAY_START = datetime(2026, 11, 10, tzinfo=timezone.utc)
MICRO = timedelta(microseconds=1)
FEATURES = ("txn_count_1d", "txn_count_30d", "amount_sum_30d", "chargeback_count_30d", "chargeback_rate_30d", "merchant_age_days")


def _risk(spark, transactions, chargebacks, merchants) -> dict[int, tuple]:
    """transactions: (txn_id, merchant_id, amount, event_timestamp); chargebacks: (txn_id, reported_timestamp);
    merchants: (merchant_id, created_timestamp). Returns merchant_id -> feature values, in FEATURES order."""
    txn_time = {txn_id: ts for txn_id, _, _, ts in transactions}
    txn_frame = spark.createDataFrame(
        [(txn_id, 1, merchant, amount, "EUR", "DE", "pos", ts) for txn_id, merchant, amount, ts in transactions],
        schema=TRANSACTIONS.schema,
    )
    chargeback_frame = spark.createDataFrame(
        [(txn_id, 1, 0, txn_time[txn_id], reported) for txn_id, reported in chargebacks], schema=CHARGEBACKS.schema
    )
    merchant_frame = spark.createDataFrame([(m, created, "grocery", "DE") for m, created in merchants], schema=MERCHANTS.schema)
    rows = build_merchant_risk(txn_frame, chargeback_frame, merchant_frame, DAY).collect()
    # Spark returns naive datetimes in the session time zone, which is UTC.
    assert {row.event_timestamp.replace(tzinfo=timezone.utc) for row in rows} <= {SNAPSHOT}
    return {row.merchant_id: tuple(row[name] for name in FEATURES) for row in rows}


def test_snapshot_is_the_last_microsecond_of_the_day():
    assert snapshot_time(DAY) == SNAPSHOT


def test_columns_names_types_and_order(spark):
    frame = build_merchant_risk(
        spark.createDataFrame([], TRANSACTIONS.schema), spark.createDataFrame([], CHARGEBACKS.schema),
        spark.createDataFrame([], MERCHANTS.schema), DAY,
    )
    assert [(field.name, field.dataType.simpleString()) for field in frame.schema.fields] == [
        ("merchant_id", "bigint"), ("event_timestamp", "timestamp"), ("txn_count_1d", "bigint"),
        ("txn_count_30d", "bigint"), ("amount_sum_30d", "double"), ("chargeback_count_30d", "bigint"),
        ("chargeback_rate_30d", "double"), ("merchant_age_days", "double"),
    ]


def test_only_labels_reported_by_the_snapshot_count(spark):
    two_days_ago = DAY_START - timedelta(days=2)
    transactions = [("a", 10, 10.0, two_days_ago), ("b", 10, 20.0, two_days_ago), ("c", 10, 30.0, DAY_START), ("d", 10, 40.0, SNAPSHOT)]
    chargebacks = [
        ("a", SNAPSHOT),  # reported exactly at the snapshot: known
        ("b", SNAPSHOT + MICRO),  # reported a microsecond later: not known yet
        ("c", DAY_START + timedelta(hours=1)),
    ]
    created = SNAPSHOT - timedelta(days=100, hours=12)
    assert _risk(spark, transactions, chargebacks, [(10, created)]) == {10: (2, 4, 100.0, 2, 0.5, 100.5)}


def test_30_day_window_and_1_day_count_edges(spark):
    transactions = [
        ("out", 10, 1.0, SNAPSHOT - timedelta(days=30)),
        ("in", 10, 2.0, SNAPSHOT - timedelta(days=30) + MICRO),
        ("yesterday", 10, 4.0, DAY_START - MICRO),
        ("today", 10, 8.0, DAY_START),
    ]
    chargebacks = [("out", DAY_START), ("in", DAY_START)]
    created = DAY_START - timedelta(days=1)
    assert _risk(spark, transactions, chargebacks, [(10, created)]) == {
        10: (1, 3, 14.0, 1, 1 / 3, (SNAPSHOT - created) / timedelta(days=1)),
    }


def test_merchants_without_transactions_in_the_window_get_no_row_and_unknown_merchants_no_age(spark):
    transactions = [("old", 11, 1.0, SNAPSHOT - timedelta(days=31)), ("new", 12, 5.0, DAY_START)]
    merchants = [(10, DAY_START), (11, DAY_START - timedelta(days=60))]
    assert _risk(spark, transactions, [], merchants) == {12: (1, 1, 5.0, 0, 0.0, None)}
