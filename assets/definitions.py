"""The one place that assembles the Dagster code location (workspace.yaml points here)."""

from __future__ import annotations

import dagster as dg

from assets.checks import all_checks
from assets.features import feature_view_assets
from assets.monitoring import monitoring_definitions
from assets.freshness import (
    FRESHNESS_JOB, apply_freshness_policies, freshness_check_keys, freshness_job, partition_freshness_checks,
)
from assets.partitions import daily_partitions
from assets.raw import raw_assets
from assets.registry import feast_registry_asset
from assets.resources import build_resources
from assets.sensors import alert_sensors, automation_sensor, catalog_refresh_sensor, freshness_sensor
from assets.stream import stream_definitions
from assets.training import training_assets
from catalog.asset import CATALOG_KEY, catalog_asset
from core.feast_repo import load_repo_contents
from core.settings import Settings
from pipelines.registry import RAW_PARTITIONED_TABLES

SETUP_JOB = "platform_setup"
DAILY_JOB = "daily_features"
CATALOG_JOB = "refresh_catalog"
TRAINING_JOB = "train_models"


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions_def = daily_partitions(settings)
    repo = load_repo_contents(settings)
    assets = [
        feast_registry_asset(settings.feature_repo_dir),
        *raw_assets(partitions_def),
        *feature_view_assets(repo.feature_views, repo.entities, partitions_def, settings.feature_repo_dir),
        catalog_asset(settings, [view.name for view in repo.feature_views]),
        *training_assets(repo.feature_services),
    ]
    stream_assets, stream_checks, stream_jobs, stream_sensors = stream_definitions(repo.feature_views, repo.entities)
    monitoring_assets, monitoring_jobs, monitoring_schedules = monitoring_definitions(repo.feature_services, repo.feature_views, partitions_def)
    checks = all_checks(repo.feature_views, repo.entities, partitions_def, settings.feature_repo_dir)
    partition_freshness = partition_freshness_checks(repo.feature_views)
    freshness_keys = freshness_check_keys(repo.feature_views, partition_freshness)
    unpartitioned = dg.AssetSelection.assets(*(asset.key for asset in assets if asset.partitions_def is None))
    # Freshness is about "now", not about the day being computed: the freshness job runs those checks.
    daily_checks = [key for check in checks for key in check.check_keys if key not in freshness_keys]
    daily_selection = (dg.AssetSelection.groups("raw", "features", "online") - unpartitioned).without_checks() | dg.AssetSelection.checks(
        *(key for key in daily_checks if key.asset_key.path[0] in ("features", "online") or key.asset_key.path[1] in RAW_PARTITIONED_TABLES)
    )
    setup_job = dg.define_asset_job(
        SETUP_JOB,
        selection=unpartitioned - dg.AssetSelection.assets(CATALOG_KEY) - dg.AssetSelection.groups("training"),
        description="Apply the Feast registry and load the dimension tables.",
    )
    catalog_job = dg.define_asset_job(
        CATALOG_JOB, selection=dg.AssetSelection.assets(CATALOG_KEY), description="Rebuild the feature catalog."
    )
    daily_job = dg.define_asset_job(
        DAILY_JOB,
        selection=daily_selection,
        description="One day: raw tables -> feature tables -> Redis.",
    )
    training_job = dg.define_asset_job(
        TRAINING_JOB, selection=dg.AssetSelection.groups("training"), description="Training set -> model (MLflow run, new version) -> champion, gated by the promotion checks."
    )
    return dg.Definitions(
        assets=[*apply_freshness_policies(assets, repo.feature_views), *stream_assets, *monitoring_assets],
        asset_checks=[*checks, *partition_freshness, *stream_checks],
        jobs=[setup_job, daily_job, catalog_job, training_job, freshness_job(freshness_keys), *stream_jobs, *monitoring_jobs],
        # Each night, once the day is complete, run it end to end.
        schedules=[dg.build_schedule_from_partitioned_job(daily_job, hour_of_day=1, minute_of_hour=0), *monitoring_schedules],
        sensors=[freshness_sensor(FRESHNESS_JOB), automation_sensor(), catalog_refresh_sensor(CATALOG_JOB),
                 *alert_sensors(settings.webhook_url), *stream_sensors],
        resources=build_resources(settings),
    )
