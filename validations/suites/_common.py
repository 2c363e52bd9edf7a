"""Building blocks shared by the suites (plain GX 1.x expectations, nothing custom)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import great_expectations.expectations as gxe
import pandas as pd

# Raw suites run on the landing partition: a few contract-breaking rows are quarantined and valid rows
# flow on, but more than this share of bad rows means the feed is broken, and the day stops there.
MAX_BAD_ROW_SHARE = 0.01


@dataclass(frozen=True)
class SuiteParams:
    partition_date: date | None = None  # None: an unpartitioned table (dimension snapshot)
    previous_rows: int | None = None  # rows of the previous partition, when there is one


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
