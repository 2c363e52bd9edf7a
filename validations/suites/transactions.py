"""raw/transactions, validated on the landing partition (before quarantine): the contract's row-level
rules as shares of bad rows, plus what only the whole partition shows."""

from pipelines.contracts import TRANSACTIONS
from validations.expect import SuiteParams, contract_expectations, quantiles, row_count_vs_previous

TABLE = "transactions"
KEYS = ("txn_id",)
CONTRACT = TRANSACTIONS


def expectations(params: SuiteParams):
    return [
        *contract_expectations(CONTRACT, params),
        *row_count_vs_previous(params, 0.5, 2.0),
        # Amounts are in local currency (JPY ~150x USD): the median is robust to that mix and to fraud.
        quantiles("amount", {0.5: (5.0, 500.0)}),
    ]
