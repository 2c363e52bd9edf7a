"""Merchant risk: a daily end-of-day snapshot per merchant, using only labels known by then."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.registry import FeaturePipeline

WINDOW_DAYS = 30
SECONDS_PER_DAY = 86_400


def snapshot_time(partition_date: date) -> datetime:
    """The last microsecond of the partition day: the snapshot is known only once the day is over."""
    return datetime.combine(partition_date + timedelta(days=1), time(), tzinfo=timezone.utc) - timedelta(microseconds=1)


def build_merchant_risk(transactions: DataFrame, chargebacks: DataFrame, merchants: DataFrame, partition_date: date) -> DataFrame:
    snapshot = snapshot_time(partition_date)
    window_start = snapshot - timedelta(days=WINDOW_DAYS)
    day_start = datetime.combine(partition_date, time(), tzinfo=timezone.utc)
    in_window = transactions.where(
        (F.col("event_timestamp") > F.lit(window_start)) & (F.col("event_timestamp") <= F.lit(snapshot))
    ).select("txn_id", "merchant_id", "amount", "event_timestamp")
    # A chargeback counts only once it has been reported: later labels are unknown at the snapshot.
    known_chargebacks = chargebacks.where(F.col("reported_timestamp") <= F.lit(snapshot)).select(
        "txn_id", F.lit(1).alias("charged_back")
    ).dropDuplicates(["txn_id"])
    per_merchant = (
        in_window.join(known_chargebacks, on="txn_id", how="left")
        .groupBy("merchant_id")
        .agg(
            F.sum(F.when(F.col("event_timestamp") >= F.lit(day_start), 1).otherwise(0)).cast("long").alias("txn_count_1d"),
            F.count(F.lit(1)).cast("long").alias("txn_count_30d"),
            F.sum("amount").cast("double").alias("amount_sum_30d"),
            F.coalesce(F.sum("charged_back"), F.lit(0)).cast("long").alias("chargeback_count_30d"),
        )
    )
    created = merchants.select("merchant_id", "created_timestamp")
    return (
        per_merchant.join(created, on="merchant_id", how="left")
        .select(
            "merchant_id",
            F.lit(snapshot).cast("timestamp").alias("event_timestamp"),
            "txn_count_1d",
            "txn_count_30d",
            "amount_sum_30d",
            "chargeback_count_30d",
            (F.col("chargeback_count_30d") / F.col("txn_count_30d")).cast("double").alias("chargeback_rate_30d"),
            ((F.unix_micros(F.lit(snapshot).cast("timestamp")) - F.unix_micros("created_timestamp")) / (SECONDS_PER_DAY * 1_000_000.0))
            .cast("double").alias("merchant_age_days"),
        )
    )


def _build(tables: Mapping[str, DataFrame], partition_date: date) -> DataFrame:
    return build_merchant_risk(tables["transactions"], tables["chargebacks"], tables["merchants"], partition_date)


PIPELINE = FeaturePipeline(
    name="merchant_risk", inputs={"transactions": WINDOW_DAYS, "chargebacks": WINDOW_DAYS, "merchants": 0}, build=_build
)
