"""merchant_risk: an end-of-day snapshot per merchant, using only the chargeback labels known by then.

The view, the Spark function computing one daily partition (PIPELINE) and the view-specific expectations
of its suite. Not-null, type, key and partition-day expectations come from the schema
(validations/feature_suite.py); the output is checked against the schema before it is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone

from feast import FeatureView, Field
from feast.types import Float64, Int64
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from data_sources import offline_table_source
from entities import merchant
from pipelines.registry import FeaturePipeline

WINDOW_DAYS = 30
MICROS_PER_DAY = 86_400 * 1_000_000

merchant_risk = FeatureView(
    name="merchant_risk",
    entities=[merchant],
    ttl=timedelta(days=2),
    source=offline_table_source("merchant_risk"),
    online=True,
    owner="risk-data@featurestack.dev",
    description="Daily end-of-day risk snapshot of a merchant, using only chargebacks already reported by then.",
    tags={"freshness_sla_hours": "48", "team": "fraud"},
    schema=[
        Field(name="txn_count_1d", dtype=Int64, description="Transactions on the snapshot day."),
        Field(name="txn_count_30d", dtype=Int64, description="Transactions in the last 30 days."),
        Field(name="amount_sum_30d", dtype=Float64, description="Amount processed in the last 30 days."),
        Field(name="chargeback_count_30d", dtype=Int64, description="Last-30-day transactions with a chargeback reported by the snapshot time."),
        Field(name="chargeback_rate_30d", dtype=Float64, description="chargeback_count_30d / txn_count_30d: only labels known at the snapshot time."),
        Field(name="merchant_age_days", dtype=Float64, tags={"nullable": "true"},
              description="Days since the merchant was created (new merchants are riskier)."),
    ],
)


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
    name=merchant_risk.name,
    inputs={"transactions": WINDOW_DAYS, "chargebacks": WINDOW_DAYS, "merchants": 0},
    build=_build,
)


def expectations(params):
    from validations.expect import at_least, between, mean, quantiles, row_count_vs_previous

    return [
        between("txn_count_30d", 1, None),
        between("txn_count_1d", 0, None),
        between("chargeback_count_30d", 0, None),
        between("chargeback_rate_30d", 0.0, 1.0),
        between("merchant_age_days", 0.0, None),
        at_least("txn_count_30d", "txn_count_1d"),
        at_least("txn_count_30d", "chargeback_count_30d"),
        # The 30-day window only fills up: merchants active in it rarely disappear from one day to the next.
        *row_count_vs_previous(params, 0.8, 3.0),
        mean("chargeback_rate_30d", 0.0, 0.2),
        quantiles("txn_count_30d", {0.5: (1.0, 1e7)}),
    ]
