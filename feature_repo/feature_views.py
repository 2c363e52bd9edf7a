"""Feature views: THE definition of which features exist. Dagster assets, checks, freshness and the
catalog are derived from these. Tags a view must carry:
  pipeline            module in pipelines/ that computes it (pipelines/<pipeline>.py: PIPELINE)
  freshness_sla_hours how old the newest value may be, online and offline
"""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64

from data_sources import merchant_risk_source, user_velocity_source
from entities import merchant, user

OWNER = "risk-data@featurestack.dev"

user_velocity = FeatureView(
    name="user_velocity",
    entities=[user],
    ttl=timedelta(days=7),
    source=user_velocity_source,
    online=True,
    owner=OWNER,
    description="Spending velocity of a card holder as of each of their transactions (windows end at and include it).",
    tags={"pipeline": "user_velocity", "freshness_sla_hours": "36", "team": "fraud"},
    schema=[
        Field(name="txn_count_1h", dtype=Int64, description="Transactions in the last hour."),
        Field(name="txn_count_24h", dtype=Int64, description="Transactions in the last 24 hours."),
        Field(name="txn_count_7d", dtype=Int64, description="Transactions in the last 7 days."),
        Field(name="amount_sum_1h", dtype=Float64, description="Amount spent in the last hour."),
        Field(name="amount_sum_24h", dtype=Float64, description="Amount spent in the last 24 hours."),
        Field(name="amount_sum_7d", dtype=Float64, description="Amount spent in the last 7 days."),
        Field(name="amount_mean_7d", dtype=Float64, description="Mean transaction amount over the last 7 days (the user's norm)."),
        Field(name="distinct_merchants_24h", dtype=Int64, description="Distinct merchants paid in the last 24 hours."),
        Field(name="seconds_since_prev_txn", dtype=Float64, description="Seconds since the user's previous transaction (null for the first in 7 days)."),
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
