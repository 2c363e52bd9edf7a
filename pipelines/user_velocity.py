"""User velocity: how fast and how much a card holder spends, as of each of their transactions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pipelines.registry import FeaturePipeline

MICROS_PER_SECOND = 1_000_000
WINDOWS = {"1h": 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600}


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def build_user_velocity(transactions: DataFrame, partition_date: date) -> DataFrame:
    """One row per (user_id, event_timestamp) on `partition_date`; windows are (t - W, t], so they
    include the transactions at t. `transactions` must hold the 7 days before the date as well."""
    # Same-instant transactions of a user are one observation: aggregate them first.
    per_instant = transactions.groupBy("user_id", "event_timestamp").agg(
        F.count(F.lit(1)).alias("instant_count"),
        F.sum("amount").alias("instant_amount"),
        F.collect_set("merchant_id").alias("instant_merchants"),
    ).withColumn("ts_micros", F.unix_micros("event_timestamp"))

    def trailing(seconds: int) -> Window:
        return (
            Window.partitionBy("user_id")
            .orderBy("ts_micros")
            .rangeBetween(-(seconds * MICROS_PER_SECOND) + 1, Window.currentRow)
        )

    by_time = Window.partitionBy("user_id").orderBy("ts_micros")
    features = per_instant.select(
        "user_id",
        "event_timestamp",
        *(F.sum("instant_count").over(trailing(s)).cast("long").alias(f"txn_count_{name}") for name, s in WINDOWS.items()),
        *(F.sum("instant_amount").over(trailing(s)).cast("double").alias(f"amount_sum_{name}") for name, s in WINDOWS.items()),
        F.size(F.array_distinct(F.flatten(F.collect_list("instant_merchants").over(trailing(WINDOWS["24h"]))))).cast("long").alias("distinct_merchants_24h"),
        ((F.col("ts_micros") - F.lag("ts_micros").over(by_time)) / MICROS_PER_SECOND).cast("double").alias("seconds_since_prev_txn"),
    ).withColumn("amount_mean_7d", F.col("amount_sum_7d") / F.col("txn_count_7d"))
    start, end = _day_bounds(partition_date)
    return features.where((F.col("event_timestamp") >= F.lit(start)) & (F.col("event_timestamp") < F.lit(end))).select(
        "user_id", "event_timestamp",
        "txn_count_1h", "txn_count_24h", "txn_count_7d",
        "amount_sum_1h", "amount_sum_24h", "amount_sum_7d", "amount_mean_7d",
        "distinct_merchants_24h", "seconds_since_prev_txn",
    )


def _build(tables: Mapping[str, DataFrame], partition_date: date) -> DataFrame:
    return build_user_velocity(tables["transactions"], partition_date)


PIPELINE = FeaturePipeline(name="user_velocity", inputs={"transactions": 7}, build=_build)
