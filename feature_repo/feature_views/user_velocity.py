"""user_velocity: spending velocity of a card holder as of each of their transactions.

Each feature is a trailing-window aggregation of the user's transactions (`windowed_field`): this
declaration is the only implementation spec, so the module needs no PIPELINE (pipelines/windowed.py
derives the Spark batch, streaming/ the stream processor). Not-null, type, key and partition-day
expectations come from the schema (validations/feature_suite.py); `expectations` adds what only this
view knows.
"""

from datetime import timedelta

from feast import FeatureView, PushSource

from core.windows import VIEW_TAG_EVENT_ID, VIEW_TAG_SOURCE, windowed_field
from data_sources import offline_table_source
from entities import user

# Streamed rows enter the view through this push source (FeatureStore.push, feast serve's /push).
user_velocity_push_source = PushSource(name="user_velocity_push", batch_source=offline_table_source("user_velocity"))

user_velocity = FeatureView(
    name="user_velocity",
    entities=[user],
    ttl=timedelta(days=7),
    # A PushSource over the parquet batch source: FeatureStore.push() and `feast serve`'s /push update
    # the view online; the stream processor (featurestack stream) writes the same rows.
    source=user_velocity_push_source,
    online=True,
    owner="risk-data@featurestack.dev",
    description="Spending velocity of a card holder as of each of their transactions (windows end at and include it).",
    tags={"freshness_sla_hours": "36", "team": "fraud", VIEW_TAG_SOURCE: "transactions", VIEW_TAG_EVENT_ID: "txn_id"},
    schema=[
        windowed_field("txn_count_1h", "count", "1h", description="Transactions in the last hour."),
        windowed_field("txn_count_24h", "count", "24h", description="Transactions in the last 24 hours."),
        windowed_field("txn_count_7d", "count", "7d", description="Transactions in the last 7 days."),
        windowed_field("amount_sum_1h", "sum", "1h", "amount", description="Amount spent in the last hour."),
        windowed_field("amount_sum_24h", "sum", "24h", "amount", description="Amount spent in the last 24 hours."),
        windowed_field("amount_sum_7d", "sum", "7d", "amount", description="Amount spent in the last 7 days."),
        windowed_field("amount_mean_7d", "mean", "7d", "amount",
                       description="Mean transaction amount over the last 7 days (the user's norm)."),
        windowed_field("distinct_merchants_24h", "count_distinct", "24h", "merchant_id",
                       description="Distinct merchants paid in the last 24 hours."),
        windowed_field("seconds_since_prev_txn", "seconds_since_previous", "7d",
                       description="Seconds since the user's previous transaction (null for the first in 7 days)."),
    ],
)


def expectations(params):
    from validations.expect import at_least, between, mean, quantiles, row_count_vs_previous

    return [
        # A window always includes the transaction it is computed at.
        *(between(f"txn_count_{w}", 1, None) for w in ("1h", "24h", "7d")),
        *(between(f"amount_sum_{w}", 0, None, strict_low=True) for w in ("1h", "24h", "7d")),
        between("amount_mean_7d", 0, None, strict_low=True),
        between("distinct_merchants_24h", 1, None),
        between("seconds_since_prev_txn", 0, 7 * 24 * 3600),
        at_least("txn_count_24h", "txn_count_1h"),
        at_least("txn_count_7d", "txn_count_24h"),
        at_least("amount_sum_7d", "amount_sum_24h"),
        at_least("txn_count_24h", "distinct_merchants_24h"),
        *row_count_vs_previous(params, 0.5, 2.0),
        # Distribution bounds that a broken window or join would leave.
        mean("txn_count_1h", 1.0, 10.0),
        quantiles("amount_mean_7d", {0.5: (5.0, 500.0)}),
    ]
