"""raw/merchants (dimension snapshot), validated on the landing snapshot: the contract's row-level
rules as shares of bad rows, plus what only the whole table shows."""

import great_expectations.expectations as gxe

from pipelines.contracts import MERCHANTS
from validations.expect import SuiteParams, contract_expectations, row_count_vs_previous

TABLE = "merchants"
KEYS = ("merchant_id",)
CONTRACT = MERCHANTS


def expectations(params: SuiteParams):
    return [
        *contract_expectations(CONTRACT, params),
        *row_count_vs_previous(params, 0.5, 2.0),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="category", min_value=2),
    ]
