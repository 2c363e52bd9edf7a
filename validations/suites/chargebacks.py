"""raw/chargebacks, validated on the landing partition (partitioned by transaction day): the
contract's row-level rules as shares of bad rows, plus what only the whole partition shows."""

import great_expectations.expectations as gxe

from pipelines.contracts import CHARGEBACKS
from validations.expect import SuiteParams, contract_expectations, row_count_vs_previous

TABLE = "chargebacks"
KEYS = ("txn_id",)
CONTRACT = CHARGEBACKS


def expectations(params: SuiteParams):
    return [
        *contract_expectations(CONTRACT, params),
        # Labels are few per day: a wide band still catches a missing or duplicated feed.
        *row_count_vs_previous(params, 0.2, 5.0),
        # Labels arrive 1 to 14 days after the transaction: a median outside that band is a broken feed.
        gxe.ExpectColumnMedianToBeBetween(column="report_delay_days", min_value=0.5, max_value=30.0),
    ]


def prepare(df):
    """Derived columns the expectations read (validation works on a copy, never on the table)."""
    delay = (df["reported_timestamp"] - df["txn_timestamp"]).dt.total_seconds() / 86_400
    return df.assign(report_delay_days=delay)
