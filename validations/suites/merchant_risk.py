"""features/merchant_risk: one offline-store partition (one end-of-day snapshot per active merchant)."""

from validations.suites._common import (
    SuiteParams, at_least, between, in_partition_day, mean, not_null, quantiles, row_count_vs_previous, unique,
)

TABLE = "merchant_risk"
KEYS = ("merchant_id", "event_timestamp")


def expectations(params: SuiteParams):
    return [
        *not_null("merchant_id", "event_timestamp", "txn_count_1d", "txn_count_30d", "amount_sum_30d",
                  "chargeback_count_30d", "chargeback_rate_30d"),
        unique(*KEYS),
        *in_partition_day("event_timestamp", params),
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
