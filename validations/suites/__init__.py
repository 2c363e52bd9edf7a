"""One expectation suite per table, named after it: raw tables (validated on the landing partition,
before the contract splits it) and feature tables (validated on the offline-store partition).

Each module defines TABLE, KEYS (the columns that identify a row) and `expectations(params)`, the
list of GX 1.x expectations for one partition; `params` carries what depends on the partition (its
day, the previous partition's row count).
"""

SUITE_MODULES = ("transactions", "chargebacks", "users", "merchants", "user_velocity", "merchant_risk")
