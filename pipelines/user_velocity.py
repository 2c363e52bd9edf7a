"""User velocity: how often, how much and at how many merchants a card holder spent, as of each of
their transactions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone

from pyspark.sql import DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from pipelines.registry import FeaturePipeline

LOOKBACK_DAYS = 7
MICROS_PER_SECOND = 1_000_000
SECONDS_PER_HOUR = 3_600
SECONDS_PER_DAY = 86_400


def _trailing(seconds: int) -> WindowSpec:
    """The user's instants in (t - seconds, t]: exactly `seconds` back is out, a microsecond less is in."""
    return (
        Window.partitionBy("user_id")
        .orderBy("event_micros")
        .rangeBetween(-seconds * MICROS_PER_SECOND + 1, Window.currentRow)
    )


def build_user_velocity(transactions: DataFrame, partition_date: date) -> DataFrame:
    """One row per (user_id, event_timestamp) on `partition_date` (UTC), with the features as of that
    instant including its own transactions. `transactions` must also hold the 7 days before the date."""
    # Transactions of a user at the same instant are one observation: aggregate them before windowing,
    # so the instant gets one row and the range windows see no ties.
    per_instant = (
        transactions.groupBy("user_id", "event_timestamp")
        .agg(
            F.count(F.lit(1)).alias("instant_txn_count"),
            F.sum("amount").alias("instant_amount_sum"),
            F.collect_set("merchant_id").alias("instant_merchant_ids"),
        )
        .withColumn("event_micros", F.unix_micros("event_timestamp"))
    )
    last_1h = _trailing(SECONDS_PER_HOUR)
    last_24h = _trailing(SECONDS_PER_DAY)
    last_7d = _trailing(LOOKBACK_DAYS * SECONDS_PER_DAY)
    previous_instant = Window.partitionBy("user_id").orderBy("event_micros")
    features = per_instant.select(
        "user_id",
        "event_timestamp",
        F.sum("instant_txn_count").over(last_1h).alias("txn_count_1h"),
        F.sum("instant_txn_count").over(last_24h).alias("txn_count_24h"),
        F.sum("instant_txn_count").over(last_7d).alias("txn_count_7d"),
        F.sum("instant_amount_sum").over(last_1h).alias("amount_sum_1h"),
        F.sum("instant_amount_sum").over(last_24h).alias("amount_sum_24h"),
        F.sum("instant_amount_sum").over(last_7d).alias("amount_sum_7d"),
        F.size(F.array_distinct(F.flatten(F.collect_list("instant_merchant_ids").over(last_24h))))
        .cast("long")
        .alias("distinct_merchants_24h"),
        ((F.col("event_micros") - F.lag("event_micros").over(previous_instant)) / MICROS_PER_SECOND)
        .alias("seconds_since_prev_txn"),
    )
    day_start = datetime.combine(partition_date, time(), tzinfo=timezone.utc)
    # The look-back days only feed the windows; their rows belong to earlier partitions.
    return features.where(
        (F.col("event_timestamp") >= F.lit(day_start)) & (F.col("event_timestamp") < F.lit(day_start + timedelta(days=1)))
    ).select(
        "user_id",
        "event_timestamp",
        "txn_count_1h",
        "txn_count_24h",
        "txn_count_7d",
        "amount_sum_1h",
        "amount_sum_24h",
        "amount_sum_7d",
        (F.col("amount_sum_7d") / F.col("txn_count_7d")).alias("amount_mean_7d"),
        "distinct_merchants_24h",
        "seconds_since_prev_txn",
    )


def _build(tables: Mapping[str, DataFrame], partition_date: date) -> DataFrame:
    return build_user_velocity(tables["transactions"], partition_date)


PIPELINE = FeaturePipeline(name="user_velocity", inputs={"transactions": LOOKBACK_DAYS}, build=_build)
