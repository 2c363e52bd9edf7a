"""Building blocks of expectation suites (plain GX 1.x expectations, nothing custom): the raw suites in
validations/suites/ and the view-specific `expectations` of each feature view module use them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

import great_expectations.expectations as gxe
import pandas as pd

from pipelines.contracts import (
    MAX_BAD_ROW_SHARE,
    AtLeast,
    AtMost,
    Contract,
    InPartitionDay,
    InSet,
    NotBefore,
    NotNull,
    References,
    ValueLength,
)

# Raw suites run on the landing partition: a few contract-breaking rows are quarantined and valid rows
# flow on, but more than MAX_BAD_ROW_SHARE of bad rows means the feed is broken, and the day stops there.
MOSTLY = 1 - MAX_BAD_ROW_SHARE


@dataclass(frozen=True)
class SuiteParams:
    partition_date: date | None = None  # None: an unpartitioned table (dimension snapshot)
    previous_rows: int | None = None  # rows of the previous partition, when there is one
    # the referenced keys of a raw table's referential rules: rule reason -> the keys that exist
    known_keys: Mapping[str, pd.Index] = field(default_factory=dict)


def day_bounds(day: date) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = datetime.combine(day, time(), tzinfo=timezone.utc)
    return pd.Timestamp(start), pd.Timestamp(start + timedelta(days=1) - timedelta(microseconds=1))


def not_null(*columns: str, mostly: float = 1.0) -> list[gxe.Expectation]:
    return [gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=mostly) for column in columns]


def unique(*columns: str, mostly: float = 1.0) -> gxe.Expectation:
    if len(columns) == 1:
        return gxe.ExpectColumnValuesToBeUnique(column=columns[0], mostly=mostly)
    return gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns), mostly=mostly)


def between(column: str, low=None, high=None, *, mostly: float = 1.0, strict_low: bool = False) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, strict_min=strict_low, mostly=mostly)


def at_least(a: str, b: str) -> gxe.Expectation:
    """a >= b on every row where both are set."""
    return gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=a, column_B=b, or_equal=True, ignore_row_if="either_value_is_missing")


def in_partition_day(column: str, params: SuiteParams, *, mostly: float = 1.0) -> list[gxe.Expectation]:
    if params.partition_date is None:
        return []
    start, end = day_bounds(params.partition_date)
    return [between(column, start, end, mostly=mostly)]


def row_count_vs_previous(params: SuiteParams, low_ratio: float, high_ratio: float) -> list[gxe.Expectation]:
    """Row count within [low_ratio, high_ratio] x the previous partition's (at least one row always)."""
    if not params.previous_rows:
        return [gxe.ExpectTableRowCountToBeBetween(min_value=1)]
    return [gxe.ExpectTableRowCountToBeBetween(
        min_value=max(1, int(params.previous_rows * low_ratio)), max_value=int(params.previous_rows * high_ratio) + 1
    )]


def quantiles(column: str, ranges: dict[float, tuple[float, float]]) -> gxe.Expectation:
    return gxe.ExpectColumnQuantileValuesToBeBetween(
        column=column, quantile_ranges={"quantiles": list(ranges), "value_ranges": [list(r) for r in ranges.values()]}
    )


def mean(column: str, low: float, high: float) -> gxe.Expectation:
    return gxe.ExpectColumnMeanToBeBetween(column=column, min_value=low, max_value=high)


def reference_flag(rule: References) -> str:
    """The derived column a referential rule's expectation reads: does the row's key exist."""
    return f"{rule.column}_in_{rule.table}"


def with_reference_flags(contract: Contract, df: pd.DataFrame, params: SuiteParams) -> pd.DataFrame:
    flags = {}
    for rule in contract.references:
        if rule.reason not in params.known_keys:
            raise ValueError(f"suite {contract.table}: rule {rule.reason} needs the keys of raw/{rule.table} "
                             "(SuiteParams.known_keys; validate_partition reads them from the raw tables)")
        flags[reference_flag(rule)] = df[rule.column].isin(params.known_keys[rule.reason])
    return df.assign(**flags) if flags else df


def contract_expectations(contract: Contract, params: SuiteParams) -> list[gxe.Expectation]:
    """One expectation per row-level rule of the contract (and its unique key), each tolerating
    MAX_BAD_ROW_SHARE of breaking rows: the rows the contract quarantines, judged as a share."""
    expectations: list[gxe.Expectation] = []
    for rule in contract.rules:
        match rule:
            case NotNull(columns=columns):
                expectations += not_null(*columns, mostly=MOSTLY)
            case AtLeast(column=column, low=low, exclusive=exclusive):
                expectations.append(between(column, low, None, strict_low=exclusive, mostly=MOSTLY))
            case AtMost(column=column, high=high):
                expectations.append(between(column, None, high, mostly=MOSTLY))
            case InSet(column=column, values=values):  # null is not in the set
                expectations += [gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(values), mostly=MOSTLY),
                                 *not_null(column, mostly=MOSTLY)]
            case ValueLength(column=column, length=length):
                expectations += [gxe.ExpectColumnValueLengthsToEqual(column=column, value=length, mostly=MOSTLY),
                                 *not_null(column, mostly=MOSTLY)]
            case InPartitionDay(column=column):
                expectations += in_partition_day(column, params, mostly=MOSTLY)
            case NotBefore(column=column, other=other):
                expectations.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A=column, column_B=other, or_equal=True, ignore_row_if="either_value_is_missing", mostly=MOSTLY))
            case References():
                expectations.append(gxe.ExpectColumnValuesToBeInSet(column=reference_flag(rule), value_set=[True], mostly=MOSTLY))
            case _:
                raise TypeError(f"suite {contract.table}: no expectation for contract rule {rule!r}")
    if contract.unique_key:
        expectations.append(unique(contract.unique_key, mostly=MOSTLY))
    return expectations
