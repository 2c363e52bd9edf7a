"""raw/merchants (dimension snapshot), validated on the landing snapshot."""

import great_expectations.expectations as gxe

from validations.suites._common import SuiteParams, not_null, row_count_vs_previous, unique

TABLE = "merchants"
KEYS = ("merchant_id",)
CATEGORIES = ["grocery", "restaurants", "fuel", "fashion", "electronics", "travel",
              "digital_goods", "entertainment", "health", "home"]


def expectations(params: SuiteParams):
    return [
        *not_null("merchant_id", "created_timestamp", "category"),
        unique("merchant_id"),
        gxe.ExpectColumnValuesToBeInSet(column="category", value_set=CATEGORIES),
        gxe.ExpectColumnValueLengthsToEqual(column="country", value=2),
        *row_count_vs_previous(params, 0.5, 2.0),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="category", min_value=2),
    ]
