"""Input contracts of the raw tables, as plain data (no Spark, no GX).

One contract per raw table is the single statement of what a good landing row is. Everything that
judges landing input derives from it, so they cannot disagree:
  pipelines/raw.py        the row-level rules as Spark predicates: a breaking row is quarantined with
                          the reason of the first rule it breaks (then `duplicate_<key>`);
  validations/suites/     one GX expectation per row-level rule, tolerating MAX_BAD_ROW_SHARE of bad
                          rows (more means the feed is broken and the day stops), plus the table-level
                          facts only a suite can judge (row count, quantiles);
  landing file checks     each file's schema against `columns`, on its own;
  serving                 the request bounds of an amount.

Referential integrity, and late-arriving dimension rows: a transaction's user and merchant must be
in the users/merchants snapshot (raw/users, raw/merchants) when its day runs, a chargeback's txn_id
in raw/transactions of its transaction day. A breaking row is quarantined (`unknown_user`,
`unknown_merchant`, `unknown_transaction`), never published. When the missing dimension row lands
later (a new users/merchants snapshot), `featurestack quarantine replay` reruns every day whose
quarantine holds rows with a referential reason: those rows are judged again against the current
snapshot and, now known, reach raw, the features and Redis. (`featurestack run` does the same for all
days, since a changed snapshot changes every day's fingerprint.)
"""

from __future__ import annotations

from dataclasses import dataclass

# An amount above this is absurd for a card payment: quarantined in raw, refused (422) by serving.
MAX_AMOUNT = 1_000_000.0
ALLOWED_CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK", "PLN", "BRL")
ALLOWED_CHANNELS = ("pos", "ecom", "atm")
MERCHANT_CATEGORIES = ("grocery", "restaurants", "fuel", "fashion", "electronics", "travel", "digital_goods",
                       "entertainment", "health", "home")
# More than this share of rows breaking a rule means the feed is broken: the raw suite fails the day.
MAX_BAD_ROW_SHARE = 0.01

# The column of a quarantined row that says which rule it broke (the first, in the contract's order).
QUARANTINE_REASON = "quarantine_reason"

# Column types, as the contract names them (raw.py maps them to Spark types, the file check to Arrow).
STRING, INT64, DOUBLE, TIMESTAMP = "string", "int64", "double", "timestamp"


@dataclass(frozen=True)
class NotNull:
    reason: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class AtLeast:
    """column > low (exclusive) or >= low; NaN breaks no lower bound (see AtMost)."""

    reason: str
    column: str
    low: float
    exclusive: bool = False


@dataclass(frozen=True)
class AtMost:
    """column <= high; NaN breaks it."""

    reason: str
    column: str
    high: float


@dataclass(frozen=True)
class InSet:
    """column is one of `values` (null is not)."""

    reason: str
    column: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class ValueLength:
    """column's text has exactly `length` characters (null breaks it)."""

    reason: str
    column: str
    length: int


@dataclass(frozen=True)
class InPartitionDay:
    """The timestamp falls in the partition's UTC day (checked on daily partitions only)."""

    reason: str
    column: str


@dataclass(frozen=True)
class NotBefore:
    """column >= other."""

    reason: str
    column: str
    other: str


@dataclass(frozen=True)
class References:
    """column's value exists as `key` in raw/`table` (its partition of the same day, when the
    referenced table is partitioned by day)."""

    reason: str
    column: str
    table: str
    key: str


Rule = NotNull | AtLeast | AtMost | InSet | ValueLength | InPartitionDay | NotBefore | References


@dataclass(frozen=True)
class Contract:
    table: str
    columns: tuple[tuple[str, str], ...]  # (name, type) in order
    rules: tuple[Rule, ...]  # checked in order: the first broken rule is the row's reason
    unique_key: str | None = None  # repeats of a key (by order_by) are quarantined as duplicate_<key>
    order_by: tuple[str, ...] = ()

    @property
    def schema(self):
        """The columns as a Spark StructType (pyspark is imported only here: serving reads contracts too)."""
        from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType, TimestampType

        spark_types = {STRING: StringType(), INT64: LongType(), DOUBLE: DoubleType(), TIMESTAMP: TimestampType()}
        return StructType([StructField(name, spark_types[kind]) for name, kind in self.columns])

    @property
    def duplicate_reason(self) -> str | None:
        return f"duplicate_{self.unique_key}" if self.unique_key else None

    @property
    def references(self) -> tuple[References, ...]:
        return tuple(rule for rule in self.rules if isinstance(rule, References))

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(rule.reason for rule in self.rules) + ((self.duplicate_reason,) if self.unique_key else ())


TRANSACTIONS = Contract(
    table="transactions",
    columns=(("txn_id", STRING), ("user_id", INT64), ("merchant_id", INT64), ("amount", DOUBLE), ("currency", STRING),
             ("country", STRING), ("channel", STRING), ("event_timestamp", TIMESTAMP)),
    rules=(
        NotNull("null_key", ("txn_id", "user_id", "merchant_id", "event_timestamp")),
        NotNull("null_amount", ("amount",)),
        AtLeast("negative_or_zero_amount", "amount", 0.0, exclusive=True),
        AtMost("absurd_amount", "amount", MAX_AMOUNT),
        InSet("unknown_currency", "currency", ALLOWED_CURRENCIES),
        InSet("unknown_channel", "channel", ALLOWED_CHANNELS),
        InPartitionDay("timestamp_outside_partition_day", "event_timestamp"),
        References("unknown_user", "user_id", "users", "user_id"),
        References("unknown_merchant", "merchant_id", "merchants", "merchant_id"),
    ),
    unique_key="txn_id",
    order_by=("event_timestamp", "txn_id"),
)

CHARGEBACKS = Contract(
    table="chargebacks",
    columns=(("txn_id", STRING), ("user_id", INT64), ("merchant_id", INT64), ("txn_timestamp", TIMESTAMP),
             ("reported_timestamp", TIMESTAMP)),
    rules=(
        NotNull("null_key", ("txn_id", "user_id", "merchant_id", "txn_timestamp", "reported_timestamp")),
        InPartitionDay("txn_timestamp_outside_partition_day", "txn_timestamp"),
        NotBefore("reported_before_transaction", "reported_timestamp", "txn_timestamp"),
        References("unknown_transaction", "txn_id", "transactions", "txn_id"),
    ),
    unique_key="txn_id",
    order_by=("txn_timestamp", "txn_id"),
)

USERS = Contract(
    table="users",
    columns=(("user_id", INT64), ("signup_timestamp", TIMESTAMP), ("home_country", STRING)),
    rules=(NotNull("null_key", ("user_id", "signup_timestamp")), ValueLength("bad_country_code", "home_country", 2)),
    unique_key="user_id",
    order_by=("user_id",),
)

MERCHANTS = Contract(
    table="merchants",
    columns=(("merchant_id", INT64), ("created_timestamp", TIMESTAMP), ("category", STRING), ("country", STRING)),
    rules=(
        NotNull("null_key", ("merchant_id", "created_timestamp")),
        InSet("unknown_category", "category", MERCHANT_CATEGORIES),
        ValueLength("bad_country_code", "country", 2),
    ),
    unique_key="merchant_id",
    order_by=("merchant_id",),
)

CONTRACTS = {contract.table: contract for contract in (TRANSACTIONS, CHARGEBACKS, USERS, MERCHANTS)}
REFERENTIAL_REASONS = frozenset(rule.reason for contract in CONTRACTS.values() for rule in contract.references)
