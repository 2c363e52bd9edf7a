"""A feature table's expectation suite, built from its Feast feature view: what the schema says (every
join key and feature present with its type, not null unless the feature is tagged nullable, one row per entity and
instant, instants within the partition day) plus the view-specific `expectations(params)` of the view's
module (feature_repo/feature_views/<view>.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from core.feast_repo import FIELD_TAG_NULLABLE, VIEW_MODULES
from validations.runner import Suite  # first: it imports GX safely (validations.import_great_expectations)

import great_expectations.expectations as gxe  # noqa: E402, I001

from validations.expect import SuiteParams, in_partition_day, not_null, unique  # noqa: E402

if TYPE_CHECKING:
    from feast import FeatureView

# Feast types / entity value types -> the pandas dtypes an offline partition is read as (read_table).
# A nullable integer column holding a null is read as float64.
PANDAS_TYPES = {
    "Int64": ["int64"], "INT64": ["int64"], "Int32": ["int32"], "INT32": ["int32"],
    "Float64": ["float64"], "DOUBLE": ["float64"], "Float32": ["float32"], "FLOAT": ["float32"],
    "String": ["str", "object", "category"], "STRING": ["str", "object", "category"],
    "Bool": ["bool"], "BOOL": ["bool"],
}


def pandas_types(feast_type: str, column: str, nullable: bool) -> list[str]:
    try:
        types = list(PANDAS_TYPES[feast_type])
    except KeyError:
        raise ValueError(f"column {column!r}: no expectation for Feast type {feast_type}") from None
    return types + ["float64"] if nullable and types[0].startswith("int") else types


def schema_expectations(view: "FeatureView", join_key_types: Mapping[str, str], params: SuiteParams) -> list[gxe.Expectation]:
    # The event timestamp gets no type expectation: GX 1.x cannot type-check a tz-aware pandas column; its
    # type is checked before the write (pipelines/schema.py) and its range by in_partition_day.
    timestamp = view.batch_source.timestamp_field
    nullable = {field.name for field in view.features if field.tags.get(FIELD_TAG_NULLABLE) == "true"}
    columns = {**join_key_types, **{field.name: str(field.dtype) for field in view.features}}
    return [
        *not_null(*join_key_types, timestamp, *(name for name in columns if name not in nullable)),
        *(gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=pandas_types(type_name, name, name in nullable))
          for name, type_name in columns.items()),
        unique(*join_key_types, timestamp),
        *in_partition_day(timestamp, params),
    ]


def feature_view_suite(view: "FeatureView", join_key_types: Mapping[str, str], module: ModuleType) -> Suite:
    """The suite of `view`'s offline table; `module` is the view's module (core.feast_repo.view_module)."""
    specific: Callable[[SuiteParams], list] = getattr(module, "expectations", lambda params: [])
    return Suite(
        table=view.name,
        keys=(*join_key_types, view.batch_source.timestamp_field),
        expectations=lambda params: [*schema_expectations(view, join_key_types, params), *specific(params)],
        defined_in=f"feature_repo/{VIEW_MODULES}/{view.name}.py",
    )
