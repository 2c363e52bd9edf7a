"""A pipeline's output against the feature view it feeds, checked before anything is written: a missing
column or a column of another type fails the partition with an error naming the column, instead of
landing in the offline store where Feast, the publish and training would each fail their own way."""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import DataFrame

# Feast feature types and entity value types -> the Spark type that the offline parquet must hold.
SPARK_TYPES = {
    "Int64": "bigint", "INT64": "bigint",
    "Int32": "int", "INT32": "int",
    "Float64": "double", "DOUBLE": "double",
    "Float32": "float", "FLOAT": "float",
    "String": "string", "STRING": "string",
    "Bool": "boolean", "BOOL": "boolean",
    "UnixTimestamp": "timestamp", "UNIX_TIMESTAMP": "timestamp",
}


class OutputSchemaError(ValueError):
    pass


def spark_type(feast_type: str, column: str) -> str:
    try:
        return SPARK_TYPES[feast_type]
    except KeyError:
        raise OutputSchemaError(f"column {column!r}: Feast type {feast_type} has no offline-store mapping") from None


def check_output_schema(frame: DataFrame, expected: Mapping[str, str], what: str) -> None:
    """Raise OutputSchemaError naming every expected column (name -> Spark simple type) that `frame`
    lacks or holds with another type; extra columns are kept (Feast reads only the declared ones)."""
    actual = {field.name: field.dataType.simpleString() for field in frame.schema.fields}
    problems = [
        f"column {column!r} is missing (expected {wanted})" if column not in actual else f"column {column!r} is {actual[column]}, expected {wanted}"
        for column, wanted in expected.items()
        if actual.get(column) != wanted
    ]
    if problems:
        raise OutputSchemaError(f"{what}: output does not match the feature view: " + "; ".join(problems))
