"""raw/transactions, validated on the landing partition (before quarantine)."""

from pipelines.raw import ALLOWED_CURRENCIES, MAX_AMOUNT
from validations.suites._common import (
    MAX_BAD_ROW_SHARE, SuiteParams, between, in_partition_day, not_null, quantiles, row_count_vs_previous, unique,
)
import great_expectations.expectations as gxe

TABLE = "transactions"
KEYS = ("txn_id",)
MOSTLY = 1 - MAX_BAD_ROW_SHARE


def expectations(params: SuiteParams):
    return [
        *not_null("txn_id", "user_id", "merchant_id", "event_timestamp", "amount", mostly=MOSTLY),
        unique("txn_id", mostly=MOSTLY),
        between("amount", 0, MAX_AMOUNT, strict_low=True, mostly=MOSTLY),
        gxe.ExpectColumnValuesToBeInSet(column="currency", value_set=list(ALLOWED_CURRENCIES), mostly=MOSTLY),
        gxe.ExpectColumnValuesToBeInSet(column="channel", value_set=["pos", "ecom", "atm"], mostly=MOSTLY),
        *in_partition_day("event_timestamp", params, mostly=MOSTLY),
        *row_count_vs_previous(params, 0.5, 2.0),
        # Amounts are in local currency (JPY ~150x USD): the median is robust to that mix and to fraud.
        quantiles("amount", {0.5: (5.0, 500.0)}),
    ]
