"""Landing -> raw contract: each kind of bad row is quarantined with its reason (referential rules
included); drift and unreadable landing files fail loudly, naming table, partition, file and column.
In every case, landing rows = raw rows + quarantined rows."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from pipelines.generator import TRANSACTIONS_SCHEMA
from pipelines.raw import (
    CHARGEBACKS,
    MERCHANTS,
    QUARANTINE_REASON,
    TRANSACTIONS,
    USERS,
    SchemaDriftError,
    UnreadableLandingFileError,
    read_landing,
    split_valid_and_quarantined,
)

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 2)


def _ts(hour: int, minute: int = 0, day: int = 2) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=timezone.utc)


def _transactions(spark, rows):
    return spark.createDataFrame(rows, schema=TRANSACTIONS.schema)


GOOD = ("t1", 1, 10, 12.5, "EUR", "DE", "ecom", _ts(10))


def _dimensions(spark, users=(1,), merchants=(10, 11)):
    return {
        "users": spark.createDataFrame([(u, _ts(0, day=1), "DE") for u in users], USERS.schema),
        "merchants": spark.createDataFrame([(m, _ts(0, day=1), "grocery", "DE") for m in merchants], MERCHANTS.schema),
    }


def _split(landing, contract, references):
    """The contract's split, asserting nothing is lost: landing = raw + quarantine."""
    valid, quarantined = split_valid_and_quarantined(landing, contract, DAY, references)
    assert valid.count() + quarantined.count() == landing.count()
    return valid, quarantined


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
        (("t2", 1, 10, 12.5, "EUR", "DE", "drone", _ts(10)), "unknown_channel"),
        (("t2", 1, 10, 12.5, "EUR", "DE", None, _ts(10)), "unknown_channel"),
        (("t2", 2, 10, 12.5, "EUR", "DE", "pos", _ts(10)), "unknown_user"),
        (("t2", 1, 99, 12.5, "EUR", "DE", "pos", _ts(10)), "unknown_merchant"),
        (("t2", 1, 10, 12.5, "EUR", "DE", "ecom", _ts(1, day=3)), "timestamp_outside_partition_day"),
        (("t1", 1, 11, 99.0, "EUR", "DE", "ecom", _ts(11)), "duplicate_txn_id"),
    ],
)
def test_each_bad_transaction_is_quarantined_with_its_reason(spark, bad_row, reason):
    valid, quarantined = _split(_transactions(spark, [GOOD, bad_row]), TRANSACTIONS, _dimensions(spark))
    assert [row.txn_id for row in valid.collect()] == ["t1"]
    assert valid.collect()[0].amount == 12.5  # the first occurrence of a duplicate is the one kept
    assert [row[QUARANTINE_REASON] for row in quarantined.collect()] == [reason]


def test_rows_in_equal_rows_out_plus_quarantined(spark):
    rows = [GOOD] + [(f"t{i}", i % 3 or None, 10, float(i - 5), "EUR", "DE", "pos", _ts(i % 24)) for i in range(2, 40)]
    _valid, quarantined = _split(_transactions(spark, rows), TRANSACTIONS, _dimensions(spark, users=(1, 2)))
    assert quarantined.where(F.col(QUARANTINE_REASON).isNull()).count() == 0


def test_chargeback_reported_before_its_transaction_is_quarantined(spark):
    rows = [
        ("t1", 1, 10, _ts(10), _ts(10, day=5)),
        ("t2", 1, 10, _ts(10), _ts(9)),
    ]
    transactions = _transactions(spark, [GOOD, ("t2", 1, 10, 3.0, "EUR", "DE", "pos", _ts(10))])
    valid, quarantined = _split(spark.createDataFrame(rows, CHARGEBACKS.schema), CHARGEBACKS, {"transactions": transactions})
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


def test_a_chargeback_for_a_transaction_that_does_not_exist_is_quarantined(spark):
    rows = [("t1", 1, 10, _ts(10), _ts(10, day=5)), ("ghost", 1, 10, _ts(11), _ts(10, day=5))]
    valid, quarantined = _split(spark.createDataFrame(rows, CHARGEBACKS.schema), CHARGEBACKS,
                                {"transactions": _transactions(spark, [GOOD])})
    assert [row.txn_id for row in valid.collect()] == ["t1"]
    assert [(row.txn_id, row[QUARANTINE_REASON]) for row in quarantined.collect()] == [("ghost", "unknown_transaction")]


def test_referential_rules_need_the_referenced_table(spark):
    with pytest.raises(ValueError, match="rule unknown_user needs raw/users"):
        split_valid_and_quarantined(_transactions(spark, [GOOD]), TRANSACTIONS, DAY, {})


def _landing_partition(tmp_path, *tables: pa.Table):
    folder = tmp_path / "transactions" / f"date={DAY.isoformat()}"
    folder.mkdir(parents=True)
    for number, table in enumerate(tables):
        pq.write_table(table, folder / f"part-{number}.parquet")
    return folder


def _arrow_rows(n: int, offset: int = 0) -> pa.Table:
    return pa.Table.from_pylist([
        {"txn_id": f"t{offset + i}", "user_id": 1, "merchant_id": 10, "amount": 12.5, "currency": "EUR", "country": "DE",
         "channel": "pos", "event_timestamp": _ts(10)} for i in range(n)], schema=TRANSACTIONS_SCHEMA)


def test_each_landing_file_is_read_with_the_contract_schema(spark, tmp_path):
    folder = _landing_partition(tmp_path, _arrow_rows(3), _arrow_rows(2, offset=3))
    landing = read_landing(spark, TRANSACTIONS, folder, DAY.isoformat())
    valid, quarantined = _split(landing, TRANSACTIONS, _dimensions(spark))
    assert (landing.count(), valid.count(), quarantined.count()) == (5, 5, 0)


def test_a_second_file_without_a_column_fails_the_partition_naming_table_partition_file_and_column(spark, tmp_path):
    folder = _landing_partition(tmp_path, _arrow_rows(3), _arrow_rows(2, offset=3).drop_columns(["currency"]))
    with pytest.raises(SchemaDriftError, match=r"transactions\[2026-11-02\]: landing file part-1.parquet: column 'currency' is missing "
                                               r"\(expected string"):
        read_landing(spark, TRANSACTIONS, folder, DAY.isoformat())


def test_a_file_with_a_retyped_column_names_both_types(spark, tmp_path):
    retyped = _arrow_rows(2, offset=3)
    retyped = retyped.set_column(retyped.schema.get_field_index("user_id"), "user_id", retyped["user_id"].cast(pa.int32()))
    folder = _landing_partition(tmp_path, _arrow_rows(3), retyped)
    with pytest.raises(SchemaDriftError, match=r"transactions\[2026-11-02\]: landing file part-1.parquet: column 'user_id' has type int32, "
                                               r"expected int64"):
        read_landing(spark, TRANSACTIONS, folder, DAY.isoformat())


@pytest.mark.parametrize(("damage", "message"), [
    (lambda path: path.write_bytes(b""), "it is empty (0 bytes)"),
    (lambda path: path.write_bytes(path.read_bytes()[:-7]), "is unreadable: "),
    (lambda path: path.write_bytes(b"not parquet at all, just text"), "is unreadable: "),
])
def test_an_unreadable_file_fails_naming_table_partition_and_file_without_a_jvm_trace(spark, tmp_path, damage, message):
    folder = _landing_partition(tmp_path, _arrow_rows(3))
    damage(folder / "part-0.parquet")
    with pytest.raises(UnreadableLandingFileError) as raised:
        read_landing(spark, TRANSACTIONS, folder, DAY.isoformat())
    text = str(raised.value)
    assert text.startswith("transactions[2026-11-02]: landing file part-0.parquet") and message in text
    assert "at org.apache" not in text and "py4j" not in text.lower() and "\n" not in text
