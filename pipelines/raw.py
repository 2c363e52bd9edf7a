"""Landing zone -> raw tables: enforce each table's contract (pipelines/contracts.py), quarantine rows
that break it.

Nothing is dropped: every landing row ends up in exactly one of raw or quarantine (with the reason
of the first rule it broke). Every landing file is checked on its own before Spark reads it: a file
whose schema differs from the contract, or that cannot be read at all, fails the partition naming
the table, partition, file (and column with both types).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from pipelines.contracts import (
    CHARGEBACKS,
    CONTRACTS,
    DOUBLE,
    INT64,
    MERCHANTS,
    QUARANTINE_REASON,
    STRING,
    TIMESTAMP,
    TRANSACTIONS,
    USERS,
    AtLeast,
    AtMost,
    Contract,
    InPartitionDay,
    InSet,
    NotBefore,
    NotNull,
    References,
    Rule,
    ValueLength,
)

__all__ = ["CHARGEBACKS", "CONTRACTS", "MERCHANTS", "QUARANTINE_REASON", "TRANSACTIONS", "USERS"]

class SchemaDriftError(ValueError):
    pass


class UnreadableLandingFileError(ValueError):
    pass


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=timezone.utc)


def _marker(rule: References) -> str:
    return f"_known_{rule.reason}"


def _breaks(rule: Rule, day: date | None) -> Column:
    """TRUE for a row that breaks the rule."""
    column = F.col(rule.column) if not isinstance(rule, NotNull) else None
    match rule:
        case NotNull(columns=columns):
            broken = F.lit(False)
            for name in columns:
                broken = broken | F.col(name).isNull()
            return broken
        case AtLeast(low=low, exclusive=exclusive):
            return column <= F.lit(low) if exclusive else column < F.lit(low)
        case AtMost(high=high):
            return F.isnan(column) | (column > F.lit(high))
        case InSet(values=values):
            return ~F.coalesce(column.isin(*values), F.lit(False))
        case ValueLength(length=length):
            return ~F.coalesce(F.length(column) == length, F.lit(False))
        case InPartitionDay():
            if day is None:  # a dimension snapshot has no partition day
                return F.lit(False)
            return (column < F.lit(_day_start(day))) | (column >= F.lit(_day_start(day + timedelta(days=1))))
        case NotBefore(other=other):
            return column < F.col(other)
        case References():
            return F.col(_marker(rule)).isNull()
    raise TypeError(f"unknown contract rule {rule!r}")


def check_schema(df: DataFrame, contract: Contract) -> DataFrame:
    """Fail on drift (missing column, changed type); return the contract's columns in its order."""
    actual = {field.name: field.dataType for field in df.schema.fields}
    for expected in contract.schema.fields:
        if expected.name not in actual:
            raise SchemaDriftError(
                f"{contract.table}: column {expected.name!r} is missing "
                f"(expected {expected.dataType.simpleString()}; found columns {sorted(actual)})"
            )
        if actual[expected.name] != expected.dataType:
            raise SchemaDriftError(
                f"{contract.table}: column {expected.name!r} has type {actual[expected.name].simpleString()}, "
                f"expected {expected.dataType.simpleString()}"
            )
    return df.select(*contract.schema.fieldNames())


def _with_reference_markers(df: DataFrame, contract: Contract, references: Mapping[str, DataFrame]) -> DataFrame:
    """A marker column per referential rule: TRUE where the referenced key exists, else null."""
    for rule in contract.references:
        if rule.table not in references:
            raise ValueError(f"{contract.table}: rule {rule.reason} needs raw/{rule.table} to check {rule.column} against")
        key = f"_key_{rule.reason}"
        known = references[rule.table].select(F.col(rule.key).alias(key)).distinct().withColumn(_marker(rule), F.lit(True))
        df = df.join(known, F.col(rule.column) == F.col(key), "left").drop(key)
    return df


def with_quarantine_reason(df: DataFrame, contract: Contract, partition_date: date | None,
                           references: Mapping[str, DataFrame] | None = None) -> DataFrame:
    """Add `quarantine_reason`: the first broken rule, 'duplicate_<key>' for repeats, else null."""
    df = _with_reference_markers(df, contract, references or {})
    reason = F.lit(None).cast(StringType())
    for rule in reversed(contract.rules):
        reason = F.when(_breaks(rule, partition_date), F.lit(rule.reason)).otherwise(reason)
    df = df.withColumn(QUARANTINE_REASON, reason).drop(*(_marker(rule) for rule in contract.references))
    if contract.unique_key is None:
        return df
    # Among otherwise valid rows, the first occurrence (by the contract's order) of a key is kept.
    first_occurrence = Window.partitionBy(contract.unique_key, QUARANTINE_REASON).orderBy(
        *contract.order_by, *contract.schema.fieldNames()
    )
    occurrence = F.row_number().over(first_occurrence)
    return df.withColumn(
        QUARANTINE_REASON,
        F.when(F.col(QUARANTINE_REASON).isNull() & (occurrence > 1), F.lit(contract.duplicate_reason)).otherwise(F.col(QUARANTINE_REASON)),
    )


def split_valid_and_quarantined(df: DataFrame, contract: Contract, partition_date: date | None,
                                references: Mapping[str, DataFrame] | None = None) -> tuple[DataFrame, DataFrame]:
    """`references`: raw table name -> its rows (the dimension snapshot, or the same day's partition)
    for the contract's referential rules."""
    checked = with_quarantine_reason(check_schema(df, contract), contract, partition_date, references)
    valid = checked.where(F.col(QUARANTINE_REASON).isNull()).drop(QUARANTINE_REASON)
    quarantined = checked.where(F.col(QUARANTINE_REASON).isNotNull())
    return valid, quarantined


def _arrow_type_matches(kind: str, arrow_type: pa.DataType) -> bool:
    if kind == TIMESTAMP:  # Spark reads UTC-adjusted ms/us timestamps as its TIMESTAMP (ns it refuses)
        return pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None and arrow_type.unit in ("ms", "us")
    return {STRING: pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type),
            INT64: pa.types.is_int64(arrow_type), DOUBLE: pa.types.is_float64(arrow_type)}[kind]


def landing_files(contract: Contract, path: Path, partition: str) -> list[Path]:
    """The data files of a landing partition (or snapshot), each checked against the contract's
    columns from its own footer. Raises SchemaDriftError or UnreadableLandingFileError naming the
    table, partition, file (and column, with both types)."""
    where = f"{contract.table}[{partition}]"
    # Spark's convention: names starting with _ or . are not data (_SUCCESS, .crc).
    files = sorted(p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file() and not p.name.startswith(("_", ".")))
    if not files:
        raise UnreadableLandingFileError(f"{where}: no data files in {path}")
    for file in files:
        name = file.relative_to(path) if path.is_dir() else file.name
        if file.stat().st_size == 0:
            raise UnreadableLandingFileError(f"{where}: landing file {name} is unreadable: it is empty (0 bytes)")
        try:
            schema = pq.read_schema(file)
        except (pa.ArrowException, OSError) as error:
            raise UnreadableLandingFileError(f"{where}: landing file {name} is unreadable: {error}") from None
        actual = {field.name: field.type for field in schema}
        for column, kind in contract.columns:
            if column not in actual:
                raise SchemaDriftError(f"{where}: landing file {name}: column {column!r} is missing "
                                       f"(expected {kind}; the file has columns {sorted(actual)})")
            if not _arrow_type_matches(kind, actual[column]):
                raise SchemaDriftError(f"{where}: landing file {name}: column {column!r} has type {actual[column]}, expected {kind}")
    return files


def read_landing(spark: SparkSession, contract: Contract, path: Path, partition: str) -> DataFrame:
    """A landing partition whose every file passed `landing_files`, read with the contract's schema
    (so no file's columns are inferred or filled in)."""
    files = landing_files(contract, path, partition)
    return spark.read.schema(contract.schema).parquet(*(str(file) for file in files))
