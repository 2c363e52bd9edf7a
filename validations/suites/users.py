"""raw/users (dimension snapshot), validated on the landing snapshot: the contract's row-level rules
as shares of bad rows, plus what only the whole table shows."""

import great_expectations.expectations as gxe

from pipelines.contracts import USERS
from validations.expect import SuiteParams, contract_expectations, row_count_vs_previous

TABLE = "users"
KEYS = ("user_id",)
CONTRACT = USERS


def expectations(params: SuiteParams):
    return [
        *contract_expectations(CONTRACT, params),
        *row_count_vs_previous(params, 0.5, 2.0),
        gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(column="home_country", max_value=0.5),
    ]
