"""Landing zone -> raw tables: enforce each table's contract, quarantine rows that break it.

Nothing is dropped: every landing row ends up in exactly one of raw or quarantine (with the reason
of the first rule it broke). A landing file whose schema drifted fails the whole partition, naming
the column and the expected vs actual type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType, TimestampType

from pipelines.contracts import MAX_AMOUNT

ALLOWED_CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK", "PLN", "BRL")
QUARANTINE_REASON = "quarantine_reason"


class SchemaDriftError(ValueError):
    pass


@dataclass(frozen=True)
class RawContract:
    table: str
    schema: StructType
    # (reason, predicate that is TRUE for a bad row); checked in order, the first match is the reason
    rules: tuple[tuple[str, Callable[[date], Column]], ...]
    unique_key: str | None = None
    order_by: tuple[str, ...] = ()


def _end_of_day(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=timezone.utc)


def _null_in(*columns: str) -> Callable[[date], Column]:
    def predicate(_day: date) -> Column:
        condition = F.lit(False)
        for column in columns:
            condition = condition | F.col(column).isNull()
        return condition
    return predicate


def _outside_day(column: str) -> Callable[[date], Column]:
    # A timestamp after the end of its partition day is in the future of that day's data.
    def predicate(day: date) -> Column:
        start = datetime.combine(day, time(), tzinfo=timezone.utc)
        return (F.col(column) < F.lit(start)) | (F.col(column) >= F.lit(_end_of_day(day)))
    return predicate


TRANSACTIONS = RawContract(
    table="transactions",
    schema=StructType([
        StructField("txn_id", StringType()),
        StructField("user_id", LongType()),
        StructField("merchant_id", LongType()),
        StructField("amount", DoubleType()),
        StructField("currency", StringType()),
        StructField("country", StringType()),
        StructField("channel", StringType()),
        StructField("event_timestamp", TimestampType()),
    ]),
    rules=(
        ("null_key", _null_in("txn_id", "user_id", "merchant_id", "event_timestamp")),
        ("null_amount", _null_in("amount")),
        ("negative_or_zero_amount", lambda _d: F.col("amount") <= 0),
        ("absurd_amount", lambda _d: F.isnan("amount") | (F.col("amount") > MAX_AMOUNT)),
        ("unknown_currency", lambda _d: ~F.coalesce(F.col("currency").isin(*ALLOWED_CURRENCIES), F.lit(False))),
        ("timestamp_outside_partition_day", _outside_day("event_timestamp")),
    ),
    unique_key="txn_id",
    order_by=("event_timestamp", "txn_id"),
)

CHARGEBACKS = RawContract(
    table="chargebacks",
    schema=StructType([
        StructField("txn_id", StringType()),
        StructField("user_id", LongType()),
        StructField("merchant_id", LongType()),
        StructField("txn_timestamp", TimestampType()),
        StructField("reported_timestamp", TimestampType()),
    ]),
    rules=(
        ("null_key", _null_in("txn_id", "user_id", "merchant_id", "txn_timestamp", "reported_timestamp")),
        ("txn_timestamp_outside_partition_day", _outside_day("txn_timestamp")),
        ("reported_before_transaction", lambda _d: F.col("reported_timestamp") < F.col("txn_timestamp")),
    ),
    unique_key="txn_id",
    order_by=("txn_timestamp", "txn_id"),
)

USERS = RawContract(
    table="users",
    schema=StructType([
        StructField("user_id", LongType()),
        StructField("signup_timestamp", TimestampType()),
        StructField("home_country", StringType()),
    ]),
    rules=(("null_key", _null_in("user_id")),),
    unique_key="user_id",
    order_by=("user_id",),
)

MERCHANTS = RawContract(
    table="merchants",
    schema=StructType([
        StructField("merchant_id", LongType()),
        StructField("created_timestamp", TimestampType()),
        StructField("category", StringType()),
        StructField("country", StringType()),
    ]),
    rules=(("null_key", _null_in("merchant_id", "created_timestamp")),),
    unique_key="merchant_id",
    order_by=("merchant_id",),
)

CONTRACTS = {contract.table: contract for contract in (TRANSACTIONS, CHARGEBACKS, USERS, MERCHANTS)}


def check_schema(df: DataFrame, contract: RawContract) -> DataFrame:
    """Fail on drift (missing column, changed type); return the contract's columns in its order."""
    actual = {field.name: field.dataType for field in df.schema.fields}
    for expected in contract.schema.fields:
        if expected.name not in actual:
            raise SchemaDriftError(
                f"{contract.table}: column {expected.name!r} is missing "
                f"(expected {expected.dataType.simpleString()}; found columns {sorted(actual)})"
            )
        if actual[expected.name] != expected.dataType:
            raise SchemaDriftError(
                f"{contract.table}: column {expected.name!r} has type {actual[expected.name].simpleString()}, "
                f"expected {expected.dataType.simpleString()}"
            )
    return df.select(*contract.schema.fieldNames())


def with_quarantine_reason(df: DataFrame, contract: RawContract, partition_date: date | None) -> DataFrame:
    """Add `quarantine_reason`: the first broken rule, 'duplicate_<key>' for repeats, else null."""
    reason = F.lit(None).cast(StringType())
    for name, predicate in reversed(contract.rules):
        reason = F.when(predicate(partition_date), F.lit(name)).otherwise(reason)
    df = df.withColumn(QUARANTINE_REASON, reason)
    if contract.unique_key is None:
        return df
    # Among otherwise valid rows, the first occurrence (by the contract's order) of a key is kept.
    first_occurrence = Window.partitionBy(contract.unique_key, QUARANTINE_REASON).orderBy(
        *contract.order_by, *contract.schema.fieldNames()
    )
    occurrence = F.row_number().over(first_occurrence)
    return df.withColumn(
        QUARANTINE_REASON,
        F.when(
            F.col(QUARANTINE_REASON).isNull() & (occurrence > 1), F.lit(f"duplicate_{contract.unique_key}")
        ).otherwise(F.col(QUARANTINE_REASON)),
    )


def split_valid_and_quarantined(df: DataFrame, contract: RawContract, partition_date: date | None) -> tuple[DataFrame, DataFrame]:
    checked = with_quarantine_reason(check_schema(df, contract), contract, partition_date)
    valid = checked.where(F.col(QUARANTINE_REASON).isNull()).drop(QUARANTINE_REASON)
    quarantined = checked.where(F.col(QUARANTINE_REASON).isNotNull())
    return valid, quarantined
