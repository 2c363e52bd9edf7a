"""Merchant risk: an end-of-day snapshot per merchant, using only the chargeback labels known by then."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.registry import FeaturePipeline

WINDOW_DAYS = 30
MICROS_PER_DAY = 86_400 * 1_000_000


def snapshot_time(partition_date: date) -> datetime:
    """The last microsecond of the partition day: the snapshot is known only once the day is over."""
    return datetime.combine(partition_date + timedelta(days=1), time(), tzinfo=timezone.utc) - timedelta(microseconds=1)


def build_merchant_risk(
    transactions: DataFrame, chargebacks: DataFrame, merchants: DataFrame, partition_date: date
) -> DataFrame:
    """One row per merchant with a transaction in (T - 30d, T], T = `snapshot_time(partition_date)`.

    `transactions` and `chargebacks` must hold the 30 days up to the date (chargebacks are partitioned
    by transaction date, so labels of those transactions reported later are in them too)."""
    snapshot = snapshot_time(partition_date)
    day_start = datetime.combine(partition_date, time(), tzinfo=timezone.utc)
    in_window = transactions.where(
        (F.col("event_timestamp") > F.lit(snapshot - timedelta(days=WINDOW_DAYS)))
        & (F.col("event_timestamp") <= F.lit(snapshot))
    ).select("txn_id", "merchant_id", "amount", "event_timestamp")
    # A label reported after the snapshot was not known then: counting it would leak the future.
    known_chargebacks = (
        chargebacks.where(F.col("reported_timestamp") <= F.lit(snapshot))
        .select("txn_id")
        .distinct()
        .withColumn("is_known_chargeback", F.lit(True))
    )
    per_merchant = (
        in_window.join(known_chargebacks, on="txn_id", how="left")
        .groupBy("merchant_id")
        .agg(
            F.count_if(F.col("event_timestamp") >= F.lit(day_start)).alias("txn_count_1d"),
            F.count(F.lit(1)).alias("txn_count_30d"),
            F.sum("amount").alias("amount_sum_30d"),
            F.count_if(F.col("is_known_chargeback")).alias("chargeback_count_30d"),
        )
    )
    snapshot_micros = (snapshot - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    return per_merchant.join(merchants.select("merchant_id", "created_timestamp"), on="merchant_id", how="left").select(
        "merchant_id",
        F.lit(snapshot).alias("event_timestamp"),
        "txn_count_1d",
        "txn_count_30d",
        "amount_sum_30d",
        "chargeback_count_30d",
        (F.col("chargeback_count_30d") / F.col("txn_count_30d")).alias("chargeback_rate_30d"),
        ((F.lit(snapshot_micros) - F.unix_micros("created_timestamp")) / MICROS_PER_DAY).alias("merchant_age_days"),
    )


def _build(tables: Mapping[str, DataFrame], partition_date: date) -> DataFrame:
    return build_merchant_risk(tables["transactions"], tables["chargebacks"], tables["merchants"], partition_date)


PIPELINE = FeaturePipeline(
    name="merchant_risk",
    inputs={"transactions": WINDOW_DAYS, "chargebacks": WINDOW_DAYS, "merchants": 0},
    build=_build,
)
