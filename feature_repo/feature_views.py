"""Feature views: THE definition of which features exist. Dagster assets, checks, freshness and the
catalog are derived from these. Tags a view must carry:
  pipeline            module in pipelines/ that computes it (pipelines/<pipeline>.py: PIPELINE)
  freshness_sla_hours how old the newest value may be, online and offline
"""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64

from data_sources import merchant_risk_source, user_velocity_push_source
from core.windows import VIEW_TAG_EVENT_ID, VIEW_TAG_SOURCE, windowed_field
from entities import merchant, user

OWNER = "risk-data@featurestack.dev"

user_velocity = FeatureView(
    name="user_velocity",
    entities=[user],
    ttl=timedelta(days=7),
    # A PushSource over the parquet batch source: FeatureStore.push() and `feast serve`'s /push update
    # the view online; the stream processor (featurestack stream) writes the same rows.
    source=user_velocity_push_source,
    online=True,
    owner=OWNER,
    description="Spending velocity of a card holder as of each of their transactions (windows end at and include it).",
    tags={"pipeline": "windowed", "freshness_sla_hours": "36", "team": "fraud",
          VIEW_TAG_SOURCE: "transactions", VIEW_TAG_EVENT_ID: "txn_id"},
    # Each feature is a trailing-window aggregation of the user's transactions: this declaration is the
    # only implementation spec; the Spark batch pipeline and the stream processor are derived from it.
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

merchant_risk = FeatureView(
    name="merchant_risk",
    entities=[merchant],
    ttl=timedelta(days=2),
    source=merchant_risk_source,
    online=True,
    owner=OWNER,
    description="Daily end-of-day risk snapshot of a merchant, using only chargebacks already reported by then.",
    tags={"pipeline": "merchant_risk", "freshness_sla_hours": "48", "team": "fraud"},
    schema=[
        Field(name="txn_count_1d", dtype=Int64, description="Transactions on the snapshot day."),
        Field(name="txn_count_30d", dtype=Int64, description="Transactions in the last 30 days."),
        Field(name="amount_sum_30d", dtype=Float64, description="Amount processed in the last 30 days."),
        Field(name="chargeback_count_30d", dtype=Int64, description="Last-30-day transactions with a chargeback reported by the snapshot time."),
        Field(name="chargeback_rate_30d", dtype=Float64, description="chargeback_count_30d / txn_count_30d: only labels known at the snapshot time."),
        Field(name="merchant_age_days", dtype=Float64, description="Days since the merchant was created (new merchants are riskier)."),
    ],
)
