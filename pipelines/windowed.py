"""Trailing-window aggregations in Spark, derived from a view's declaration (core/windows.py).

The stream processor (streaming/aggregator.py) derives the same rows from the same declaration; see
core/windows.py for the semantics both follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone

from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from core.windows import WindowedFeature, WindowedView
from pipelines.registry import FeaturePipeline

MICROS_PER_SECOND = 1_000_000
_MICROS = "__event_micros"
_COUNT = "__instant_count"


def _instant_sum(column: str) -> str:
    return f"__instant_sum_{column}"


def _instant_set(column: str) -> str:
    return f"__instant_set_{column}"


def _trailing(key: str, micros: int, include_current: bool = True) -> WindowSpec:
    """The entity's instants in (t - window, t] (or (t - window, t) without the current one)."""
    return Window.partitionBy(key).orderBy(_MICROS).rangeBetween(-micros + 1, Window.currentRow if include_current else -1)


def _per_instant(events: DataFrame, spec: WindowedView) -> DataFrame:
    """One row per (entity, instant): its event count, the ordered sum of each summed column, the set of
    each distinct-counted column."""
    summed = {f.column for f in spec.features if f.function in ("sum", "mean")}
    distinct = {f.column for f in spec.features if f.function == "count_distinct"}
    aggregates = [F.count(F.lit(1)).alias(_COUNT)]
    for column in sorted(summed):
        # Values of one instant are added in ascending order: the sum is then independent of row order.
        ordered = F.array_sort(F.collect_list(F.col(column).cast("double")))
        aggregates.append(F.aggregate(ordered, F.lit(0.0), lambda acc, value: acc + value).alias(_instant_sum(column)))
    for column in sorted(distinct):
        aggregates.append(F.collect_set(column).alias(_instant_set(column)))
    return events.groupBy(spec.entity_key, spec.timestamp).agg(*aggregates).withColumn(_MICROS, F.unix_micros(spec.timestamp))


def _feature(feature: WindowedFeature, key: str) -> Column:
    window = _trailing(key, feature.micros)
    if feature.function == "count":
        value = F.sum(_COUNT).over(window)
    elif feature.function == "sum":
        value = F.sum(_instant_sum(feature.column)).over(window)
    elif feature.function == "mean":
        value = F.sum(_instant_sum(feature.column)).over(window) / F.sum(_COUNT).over(window)
    elif feature.function == "count_distinct":
        value = F.size(F.array_distinct(F.flatten(F.collect_list(_instant_set(feature.column)).over(window)))).cast("long")
    elif feature.function == "seconds_since_previous":
        previous = F.max(_MICROS).over(_trailing(key, feature.micros, include_current=False))
        value = (F.col(_MICROS) - previous) / MICROS_PER_SECOND
    else:
        raise ValueError(f"feature {feature.name!r}: no Spark implementation of {feature.function!r}")
    return value.cast("long" if feature.value_type == "Int64" else "double").alias(feature.name)


def build_windowed_features(events: DataFrame, spec: WindowedView, partition_date: date) -> DataFrame:
    """One row per (entity, instant) on `partition_date` (UTC) with the view's features as of that
    instant, its own events included. `events` must also hold the `spec.lookback_days` days before."""
    features = _per_instant(events, spec).select(spec.entity_key, spec.timestamp, *(_feature(f, spec.entity_key) for f in spec.features))
    day_start = datetime.combine(partition_date, time(), tzinfo=timezone.utc)
    # The look-back days only feed the windows; their rows belong to earlier partitions.
    return features.where(
        (F.col(spec.timestamp) >= F.lit(day_start)) & (F.col(spec.timestamp) < F.lit(day_start + timedelta(days=1)))
    )


def windowed_pipeline(spec: WindowedView) -> FeaturePipeline:
    def build(tables: Mapping[str, DataFrame], partition_date: date) -> DataFrame:
        return build_windowed_features(tables[spec.source_table], spec, partition_date)

    return FeaturePipeline(name=spec.view, inputs={spec.source_table: spec.lookback_days}, build=build)
