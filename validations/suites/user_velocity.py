"""features/user_velocity: one offline-store partition (one row per user and transaction instant)."""

from validations.suites._common import (
    SuiteParams, at_least, between, in_partition_day, mean, not_null, quantiles, row_count_vs_previous, unique,
)

TABLE = "user_velocity"
KEYS = ("user_id", "event_timestamp")


def expectations(params: SuiteParams):
    return [
        *not_null("user_id", "event_timestamp", "txn_count_1h", "txn_count_24h", "txn_count_7d",
                  "amount_sum_1h", "amount_sum_24h", "amount_sum_7d", "amount_mean_7d", "distinct_merchants_24h"),
        unique(*KEYS),
        *in_partition_day("event_timestamp", params),
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
