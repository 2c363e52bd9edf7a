"""How a feature view finds the Spark function that computes it.

A view of windowed aggregations (core/windows.py) gets a pipeline derived from them. Any other
feature view's module, feature_repo/feature_views/<view>.py, exposes `PIPELINE`: a `FeaturePipeline`
saying which raw tables it reads (and how many days back) and the pure DataFrame function that builds
one daily partition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame

from core.lake import RAW_DIMENSION_TABLES, RAW_PARTITIONED_TABLES


@dataclass(frozen=True)
class FeaturePipeline:
    name: str
    # raw table -> days of history before the partition date it needs (dimension tables: 0, read whole)
    inputs: Mapping[str, int]
    # build(tables, partition_date) -> rows of that partition date only
    build: Callable[[Mapping[str, DataFrame], date], DataFrame]


def pipeline_for_view(view, join_keys: list[str], repo_dir: Path) -> FeaturePipeline:
    """The pipeline of a Feast feature view: derived from its windowed aggregations when it declares them
    (core/windows.py), else the PIPELINE of its module in `repo_dir` (feature_views/<view>.py)."""
    from core.windows import WindowedView, is_windowed

    if is_windowed(view):
        from pipelines.windowed import windowed_pipeline

        if len(join_keys) != 1:
            raise LookupError(f"windowed view {view.name!r}: one join key expected, got {join_keys}")
        return _checked(windowed_pipeline(WindowedView.from_feature_view(view, join_keys[0])))
    return view_pipeline(repo_dir, view.name)


def view_pipeline(repo_dir: Path, view_name: str) -> FeaturePipeline:
    """PIPELINE of the view's module feature_views/<view_name>.py in `repo_dir`."""
    from core.feast_repo import VIEW_MODULES, view_module

    pipeline = getattr(view_module(repo_dir, view_name), "PIPELINE", None)
    if not isinstance(pipeline, FeaturePipeline):
        raise LookupError(f"feature view {view_name!r}: {VIEW_MODULES}/{view_name}.py defines no PIPELINE "
                          "(a FeaturePipeline), and its features are not windowed aggregations")
    return _checked(pipeline)


def _checked(pipeline: FeaturePipeline) -> FeaturePipeline:
    name = pipeline.name
    unknown = set(pipeline.inputs) - set(RAW_PARTITIONED_TABLES) - set(RAW_DIMENSION_TABLES)
    if unknown:
        raise LookupError(f"feature pipeline {name!r} reads unknown raw tables {sorted(unknown)}")
    return pipeline


def history_days(pipelines: Iterable[FeaturePipeline]) -> dict[str, int]:
    """Daily raw table -> the most days before a partition date any of `pipelines` reads: a partition
    depends on exactly that much landed history."""
    days: dict[str, int] = {}
    for pipeline in pipelines:
        for table, back in pipeline.inputs.items():
            if table in RAW_PARTITIONED_TABLES:
                days[table] = max(days.get(table, 0), back)
    return days
