"""Landing -> raw contract: each kind of bad row is quarantined with its reason; drift fails loudly."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from pyspark.sql import functions as F

from pipelines.raw import CHARGEBACKS, QUARANTINE_REASON, TRANSACTIONS, SchemaDriftError, split_valid_and_quarantined

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 2)


def _ts(hour: int, minute: int = 0, day: int = 2) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=timezone.utc)


def _transactions(spark, rows):
    return spark.createDataFrame(rows, schema=TRANSACTIONS.schema)


GOOD = ("t1", 1, 10, 12.5, "EUR", "DE", "ecom", _ts(10))


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [
        (("t2", None, 10, 12.5, "EUR", "DE", "ecom", _ts(10)), "null_key"),
        (("t2", 1, 10, None, "EUR", "DE", "ecom", _ts(10)), "null_amount"),
        (("t2", 1, 10, -3.0, "EUR", "DE", "ecom", _ts(10)), "negative_or_zero_amount"),
        (("t2", 1, 10, 5e7, "EUR", "DE", "ecom", _ts(10)), "absurd_amount"),
        (("t2", 1, 10, float("nan"), "EUR", "DE", "ecom", _ts(10)), "absurd_amount"),
        (("t2", 1, 10, 12.5, "XXX", "DE", "ecom", _ts(10)), "unknown_currency"),
        (("t2", 1, 10, 12.5, None, "DE", "ecom", _ts(10)), "unknown_currency"),
        (("t2", 1, 10, 12.5, "EUR", "DE", "ecom", _ts(1, day=3)), "timestamp_outside_partition_day"),
        (("t1", 1, 11, 99.0, "EUR", "DE", "ecom", _ts(11)), "duplicate_txn_id"),
    ],
)
def test_each_bad_transaction_is_quarantined_with_its_reason(spark, bad_row, reason):
    valid, quarantined = split_valid_and_quarantined(_transactions(spark, [GOOD, bad_row]), TRANSACTIONS, DAY)
    assert [row.txn_id for row in valid.collect()] == ["t1"]
    assert valid.collect()[0].amount == 12.5  # the first occurrence of a duplicate is the one kept
    assert [row[QUARANTINE_REASON] for row in quarantined.collect()] == [reason]


def test_rows_in_equal_rows_out_plus_quarantined(spark):
    rows = [GOOD] + [(f"t{i}", i % 3 or None, 10, float(i - 5), "EUR", "DE", "pos", _ts(i % 24)) for i in range(2, 40)]
    landing = _transactions(spark, rows)
    valid, quarantined = split_valid_and_quarantined(landing, TRANSACTIONS, DAY)
    assert valid.count() + quarantined.count() == landing.count()
    assert quarantined.where(F.col(QUARANTINE_REASON).isNull()).count() == 0


def test_chargeback_reported_before_its_transaction_is_quarantined(spark):
    rows = [
        ("t1", 1, 10, _ts(10), _ts(10, day=5)),
        ("t2", 1, 10, _ts(10), _ts(9)),
    ]
    valid, quarantined = split_valid_and_quarantined(spark.createDataFrame(rows, CHARGEBACKS.schema), CHARGEBACKS, DAY)
    assert [row.txn_id for row in valid.collect()] == ["t1"]
    assert [(row.txn_id, row[QUARANTINE_REASON]) for row in quarantined.collect()] == [("t2", "reported_before_transaction")]


def test_missing_column_fails_naming_it(spark):
    landing = _transactions(spark, [GOOD]).drop("currency")
    with pytest.raises(SchemaDriftError, match=r"transactions: column 'currency' is missing \(expected string"):
        split_valid_and_quarantined(landing, TRANSACTIONS, DAY)


def test_changed_type_fails_naming_column_and_both_types(spark):
    landing = _transactions(spark, [GOOD]).withColumn("amount", F.col("amount").cast("string"))
    with pytest.raises(SchemaDriftError, match=r"column 'amount' has type string, expected double"):
        split_valid_and_quarantined(landing, TRANSACTIONS, DAY)
