"""The one place that assembles the Dagster code location (workspace.yaml points here)."""

from __future__ import annotations

import dagster as dg

from assets.features import feature_view_assets
from assets.partitions import daily_partitions
from assets.raw import raw_assets
from assets.registry import feast_registry
from assets.resources import build_resources
from catalog.asset import CATALOG_KEY, catalog_asset
from featurestack.feast_repo import load_repo_contents
from featurestack.settings import Settings, load_settings

SETUP_JOB = "platform_setup"
DAILY_JOB = "daily_features"
CATALOG_JOB = "refresh_catalog"


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    partitions_def = daily_partitions(settings)
    repo = load_repo_contents(settings)
    assets = [
        feast_registry,
        *raw_assets(partitions_def),
        *feature_view_assets(repo.feature_views, repo.entities, partitions_def),
        catalog_asset([view.name for view in repo.feature_views]),
    ]
    unpartitioned = dg.AssetSelection.assets(*(asset.key for asset in assets if asset.partitions_def is None))
    daily_selection = dg.AssetSelection.groups("raw", "features", "online") - unpartitioned
    setup_job = dg.define_asset_job(
        SETUP_JOB,
        selection=unpartitioned - dg.AssetSelection.assets(CATALOG_KEY),
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
    return dg.Definitions(
        assets=assets,
        jobs=[setup_job, daily_job, catalog_job],
        # Each night, once the day is complete, run it end to end.
        schedules=[dg.build_schedule_from_partitioned_job(daily_job, hour_of_day=1, minute_of_hour=0)],
        resources=build_resources(settings),
    )
