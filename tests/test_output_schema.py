"""A pipeline's output is checked against its feature view's schema before anything is written, and a
day's look-back comes from the pipelines' declared inputs."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pyspark.sql import functions as F

from core.settings import FEATURE_REPO_DIR
from pipelines.registry import FeaturePipeline, history_days, view_pipeline
from pipelines.schema import OutputSchemaError, check_output_schema, spark_type

pytestmark = pytest.mark.integration

EXPECTED = {"user_id": "bigint", "event_timestamp": "timestamp", "txn_count_1h": "bigint", "amount_mean_7d": "double"}


def _frame(spark, **overrides):
    columns = {"user_id": F.lit(1).cast("bigint"), "event_timestamp": F.lit(datetime(2026, 11, 2, tzinfo=timezone.utc)),
               "txn_count_1h": F.lit(3).cast("bigint"), "amount_mean_7d": F.lit(1.5).cast("double"), **overrides}
    return spark.range(1).select(*(value.alias(name) for name, value in columns.items() if value is not None))


def test_matching_output_passes_and_extra_columns_are_allowed(spark):
    check_output_schema(_frame(spark, note=F.lit("kept")), EXPECTED, "pipelines/x.py")


def test_a_missing_or_mistyped_column_is_named(spark):
    with pytest.raises(OutputSchemaError) as error:
        check_output_schema(_frame(spark, amount_mean_7d=None, txn_count_1h=F.lit(3).cast("int")), EXPECTED, "pipelines/x.py for feature view v")
    message = str(error.value)
    assert "pipelines/x.py for feature view v" in message
    assert "column 'txn_count_1h' is int, expected bigint" in message
    assert "column 'amount_mean_7d' is missing (expected double)" in message


def test_feast_types_map_to_spark_types_and_unknown_ones_are_refused():
    assert [spark_type(t, "c") for t in ("Int64", "INT64", "Float64", "String", "Bool", "UnixTimestamp")] == [
        "bigint", "bigint", "double", "string", "boolean", "timestamp"]
    with pytest.raises(OutputSchemaError, match="column 'c'"):
        spark_type("Array(Int64)", "c")


def test_a_feature_table_asset_refuses_output_that_does_not_match_its_view(spark, tmp_path):
    """The real asset path: the view's schema (from Feast) against a pipeline whose output lacks a feature."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.data_format import ParquetFormat
    from feast.types import Float64, Int64

    from assets.features import output_schema

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    view = FeatureView(name="v", entities=[user], schema=[Field(name="txn_count_1h", dtype=Int64), Field(name="amount_mean_7d", dtype=Float64)],
                       source=FileSource(path=str(tmp_path), file_format=ParquetFormat(), timestamp_field="event_timestamp"))
    assert output_schema(view, {"user_id": "INT64"}) == EXPECTED
    with pytest.raises(OutputSchemaError, match="'amount_mean_7d' is missing"):
        check_output_schema(_frame(spark, amount_mean_7d=None), output_schema(view, {"user_id": "INT64"}), "v")


def test_look_back_is_the_longest_declared_input_per_daily_table():
    def pipeline(name, inputs):
        return FeaturePipeline(name=name, inputs=inputs, build=lambda tables, day: None)

    assert history_days([pipeline("a", {"transactions": 7, "users": 0}),
                         pipeline("b", {"transactions": 60, "chargebacks": 30, "merchants": 0})]) == {"transactions": 60, "chargebacks": 30}
    merchant_risk = view_pipeline(FEATURE_REPO_DIR, "merchant_risk")
    assert history_days([merchant_risk]) == {"transactions": merchant_risk.inputs["transactions"],
                                             "chargebacks": merchant_risk.inputs["chargebacks"]}
