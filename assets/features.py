"""The asset factory: every Feast feature view yields its assets, derived from its definition.

For every view (feature_repo/feature_views/<view>.py):
  features/<view>  daily partition of the offline store, computed by the view's pipeline (its module's
                   PIPELINE, or derived from its windowed features) from the raw tables it declares (with
                   their look-back as partition mappings), checked against the view's schema before the write;
  online/<view>    the latest value per entity of that partition published to Redis in Feast's layout
                   (monotonic: never over a newer value), recorded as a materialization in the registry.
Adding a feature view module to feature_repo/feature_views/ is all it takes.
"""


import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from assets.partitions import day_window, lookback_dates, partition_date
from assets.resources import PlatformResource
from pipelines.offline_store import read_partitions, write_partition
from pipelines.registry import RAW_PARTITIONED_TABLES, FeaturePipeline, pipeline_for_view
from core.feast_repo import VIEW_MODULES
from core.windows import is_windowed
from pipelines.schema import check_output_schema, spark_type
from onlinestore.online_writer import publish_latest, read_offline_latest
from onlinestore.redis_layout import layout_from_feature_view
from onlinestore.spark_publish import publish_latest_spark, read_offline_latest_spark

if TYPE_CHECKING:
    from feast import Entity, FeatureView

FEAST_REGISTRY_KEY = dg.AssetKey("feast_registry")


def _dagster_tags(view: "FeatureView") -> dict[str, str]:
    return {f"feast/{key}": value for key, value in view.tags.items()}


def _view_metadata(view: "FeatureView") -> dict[str, object]:
    return {
        "feast/feature_view": view.name,
        "feast/entities": ", ".join(view.entities),
        "feast/ttl": str(view.ttl),
        "feast/features": dg.MetadataValue.table_schema(
            dg.TableSchema(columns=[
                dg.TableColumn(name=field.name, type=str(field.dtype), description=field.description)
                for field in view.features
            ])
        ),
    }


def _raw_deps(pipeline: FeaturePipeline) -> list[dg.AssetDep]:
    deps = []
    for table, days_back in pipeline.inputs.items():
        mapping = None
        if table in RAW_PARTITIONED_TABLES:
            # Days before the first partition do not exist; a look-back simply starts later there.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", dg.BetaWarning)
                mapping = dg.TimeWindowPartitionMapping(
                    start_offset=-days_back, end_offset=0, allow_nonexistent_upstream_partitions=True
                )
        deps.append(dg.AssetDep(dg.AssetKey(["raw", table]), partition_mapping=mapping))
    return deps


def output_schema(view: "FeatureView", join_key_types: dict[str, str]) -> dict[str, str]:
    """Column -> Spark type the view's offline table holds: join keys, event timestamp, features."""
    return {
        **{key: spark_type(value_type, key) for key, value_type in join_key_types.items()},
        view.batch_source.timestamp_field: "timestamp",
        **{field.name: spark_type(str(field.dtype), field.name) for field in view.features},
    }


def feature_table_asset(
    view: "FeatureView", join_key_types: dict[str, str], partitions_def: dg.PartitionsDefinition, repo_dir: Path
) -> dg.AssetsDefinition:
    join_keys = list(join_key_types)
    pipeline = pipeline_for_view(view, join_keys, repo_dir)
    expected = output_schema(view, join_key_types)
    defined_in = "pipelines/windowed.py" if is_windowed(view) else f"feature_repo/{VIEW_MODULES}/{view.name}.py"

    @dg.asset(
        key=["features", view.name],
        deps=_raw_deps(pipeline),
        partitions_def=partitions_def,
        group_name="features",
        kinds={"spark", "parquet"},
        owners=[view.owner] if view.owner else None,
        tags=_dagster_tags(view),
        description=f"Offline store table of feature view `{view.name}`: {view.description}",
        metadata=_view_metadata(view),
    )
    def _asset(context: dg.AssetExecutionContext, platform: PlatformResource, pyspark: LazyPySparkResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        settings = platform.settings
        spark = pyspark.spark_session
        day = partition_date(context)
        tables = {
            table: read_partitions(spark, settings.raw_dir / table, lookback_dates(day, days_back))
            if table in RAW_PARTITIONED_TABLES
            else spark.read.parquet(str(settings.raw_dir / table))
            for table, days_back in pipeline.inputs.items()
        }
        rows = pipeline.build(tables, day)
        check_output_schema(rows, expected, f"{defined_in} for feature view {view.name}")
        written = write_partition(rows, settings.offline_dir / view.name, day, sort_by=[*join_keys, "event_timestamp"])
        return dg.MaterializeResult(metadata={
            "partition": day.isoformat(),
            "dagster/row_count": written.rows,
            "path": dg.MetadataValue.path(str(written.path)),
            "pipeline": defined_in,
            "seconds": round(time.perf_counter() - started, 3),
        })

    return _asset


def online_follows_offline() -> dg.AutomationCondition:
    """Republish a day to Redis whenever its feature partition is rematerialized outside the daily job
    (from the UI, a backfill), any day, not only the latest, once the partition's blocking checks
    (its expectation suite) passed. The registry's re-apply alone republishes nothing. Checks of
    online/<view> without a condition of their own ride along with the run."""
    registry = dg.AssetSelection.assets(FEAST_REGISTRY_KEY)
    return (
        dg.AutomationCondition.any_deps_updated().ignore(registry).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("online follows offline")


def online_publish_asset(view: "FeatureView", join_keys: list[str], partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:

    @dg.asset(
        key=["online", view.name],
        deps=[dg.AssetKey(["features", view.name]), FEAST_REGISTRY_KEY],
        partitions_def=partitions_def,
        group_name="online",
        kinds={"redis"},
        owners=[view.owner] if view.owner else None,
        tags=_dagster_tags(view),
        automation_condition=online_follows_offline(),
        description=f"Latest `{view.name}` values per entity of the partition, published to Redis in Feast's layout.",
    )
    def _asset(context: dg.AssetExecutionContext, platform: PlatformResource, pyspark: LazyPySparkResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        settings = platform.settings
        day = partition_date(context)
        store = platform.feature_store()
        registered_view = store.get_feature_view(view.name)
        entity_types = {entity.join_key: entity.value_type for entity in store.list_entities()}
        layout = layout_from_feature_view(registered_view, entity_types)
        table_dir = settings.offline_dir / view.name
        created_column = registered_view.batch_source.created_timestamp_column or None
        if settings.offline_profile == "spark":  # the executors write: a cluster spreads the encoding
            latest = read_offline_latest_spark(pyspark.spark_session, table_dir, join_keys, [day],
                                               created_column=created_column)
            result = publish_latest_spark(latest, platform.redis_endpoint.url, settings.redis_type, settings.feast_project, layout,
                                          write_mode=settings.redis_write_mode)
        else:
            latest = read_offline_latest(table_dir, join_keys, dates=[day], created_column=created_column)
            client = platform.redis_client()
            try:
                result = publish_latest(client, settings.feast_project, layout, latest, write_mode=settings.redis_write_mode)
            finally:
                client.close()
        # Record the interval as `feast materialize` would, so Feast tooling sees what is online.
        start, end = day_window(day)
        store.registry.apply_materialization(registered_view, settings.feast_project, start, end)
        return dg.MaterializeResult(metadata={
            "partition": day.isoformat(),
            "entities": result.entities,
            "written": result.written,
            "skipped_not_newer": result.skipped_not_newer,
            "redis": platform.redis_endpoint.describe(),
            "publish_seconds": round(result.seconds, 3),
            "seconds": round(time.perf_counter() - started, 3),
        })

    return _asset


def feature_view_assets(
    views: "list[FeatureView]", entities: "list[Entity]", partitions_def: dg.PartitionsDefinition, repo_dir: Path
) -> list[dg.AssetsDefinition]:
    entity_of = {entity.name: entity for entity in entities}
    assets = []
    for view in sorted(views, key=lambda v: v.name):
        join_key_types = {entity_of[name].join_key: entity_of[name].value_type.name for name in view.entities}
        assets += [feature_table_asset(view, join_key_types, partitions_def, repo_dir),
                   online_publish_asset(view, list(join_key_types), partitions_def)]
    return assets
