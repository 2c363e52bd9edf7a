"""raw/users (dimension snapshot), validated on the landing snapshot."""

import great_expectations.expectations as gxe

from validations.suites._common import SuiteParams, not_null, row_count_vs_previous, unique

TABLE = "users"
KEYS = ("user_id",)


def expectations(params: SuiteParams):
    return [
        *not_null("user_id", "signup_timestamp"),
        unique("user_id"),
        gxe.ExpectColumnValueLengthsToEqual(column="home_country", value=2),
        *row_count_vs_previous(params, 0.5, 2.0),
        gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(column="home_country", max_value=0.5),
    ]
