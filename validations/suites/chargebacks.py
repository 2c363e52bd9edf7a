"""raw/chargebacks, validated on the landing partition (partitioned by transaction day)."""

import great_expectations.expectations as gxe

from validations.suites._common import (
    MAX_BAD_ROW_SHARE, SuiteParams, at_least, in_partition_day, not_null, row_count_vs_previous, unique,
)

TABLE = "chargebacks"
KEYS = ("txn_id",)
MOSTLY = 1 - MAX_BAD_ROW_SHARE


def expectations(params: SuiteParams):
    return [
        *not_null("txn_id", "user_id", "merchant_id", "txn_timestamp", "reported_timestamp", mostly=MOSTLY),
        unique("txn_id", mostly=MOSTLY),
        *in_partition_day("txn_timestamp", params, mostly=MOSTLY),
        at_least("reported_timestamp", "txn_timestamp"),
        # Labels are few per day: a wide band still catches a missing or duplicated feed.
        *row_count_vs_previous(params, 0.2, 5.0),
        # Labels arrive 1 to 14 days after the transaction: a median outside that band is a broken feed.
        gxe.ExpectColumnMedianToBeBetween(column="report_delay_days", min_value=0.5, max_value=30.0),
    ]


def prepare(df):
    """Derived columns the expectations read (validation works on a copy, never on the table)."""
    delay = (df["reported_timestamp"] - df["txn_timestamp"]).dt.total_seconds() / 86_400
    return df.assign(report_delay_days=delay)
