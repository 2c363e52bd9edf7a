"""The Dagster code location is derived from the Feast definitions: a snapshot of its asset specs."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import dagster as dg
import pytest

from assets.definitions import CATALOG_JOB, DAILY_JOB, SETUP_JOB, build_definitions
from assets.features import feature_view_assets
from assets.partitions import daily_partitions
from core.feast_repo import load_repo_contents
from core.settings import PROJECT_ROOT, load_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    return build_definitions(load_settings())


def _specs(definitions):
    graph = definitions.resolve_asset_graph()
    return {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}


def test_asset_graph_snapshot(definitions):
    specs = _specs(definitions)
    assert sorted(specs) == [
        "catalog",
        "feast_registry",
        "features/merchant_risk", "features/user_velocity",
        "monitoring/fraud_detection_v1/feature_drift", "monitoring/fraud_detection_v1/realized_performance",
        "monitoring/fraud_detection_v1/skew",
        "online/merchant_risk", "online/user_velocity",
        "raw/chargebacks", "raw/merchants", "raw/transactions", "raw/users",
        "stream/user_velocity",
        "training/fraud_detection_v1/champion", "training/fraud_detection_v1/model",
        "training/fraud_detection_v1/training_set",
    ]
    parents = {name: sorted(key.to_user_string() for key in node.parent_keys) for name, node in specs.items()}
    assert parents["features/user_velocity"] == ["raw/transactions"]
    assert parents["features/merchant_risk"] == ["raw/chargebacks", "raw/merchants", "raw/transactions"]
    assert parents["online/user_velocity"] == ["feast_registry", "features/user_velocity"]
    partitioned = sorted(name for name, node in specs.items() if node.partitions_def is not None)
    assert partitioned == ["features/merchant_risk", "features/user_velocity", "monitoring/fraud_detection_v1/feature_drift",
                           "monitoring/fraud_detection_v1/realized_performance", "monitoring/fraud_detection_v1/skew",
                           "online/merchant_risk", "online/user_velocity", "raw/chargebacks", "raw/transactions"]
    assert specs["features/user_velocity"].owners == ["risk-data@featurestack.dev"]
    assert specs["features/user_velocity"].tags["feast/stream_source"] == "transactions"
    assert specs["stream/user_velocity"].group_name == "stream"


def test_lookback_becomes_a_partition_mapping(definitions):
    graph = definitions.resolve_asset_graph()
    velocity = graph.get(dg.AssetKey(["features", "user_velocity"]))
    upstream = velocity.partition_mappings[dg.AssetKey(["raw", "transactions"])]
    assert isinstance(upstream, dg.TimeWindowPartitionMapping) and upstream.start_offset == -7
    partitions = definitions.resolve_job_def(DAILY_JOB).partitions_def
    key = "2026-11-10"
    upstream_keys = upstream.get_upstream_mapped_partitions_result_for_partitions(
        partitions.subset_with_partition_keys([key]), partitions, partitions
    ).partitions_subset.get_partition_keys()
    assert list(upstream_keys) == [f"2026-11-{day:02d}" for day in range(3, 11)]


def test_jobs_and_nightly_schedule(definitions):
    assert {job.name for job in definitions.resolve_all_job_defs()} >= {SETUP_JOB, DAILY_JOB, CATALOG_JOB}
    schedule = definitions.resolve_schedule_def(f"{DAILY_JOB}_schedule")
    assert schedule.cron_schedule == "0 1 * * *"


def test_monitoring_jobs_schedules_and_checks(definitions):
    graph = definitions.resolve_asset_graph()
    checks = {key.to_user_string(): graph.get_check_spec(key) for key in graph.asset_check_keys if key.asset_key.path[0] == "monitoring"}
    assert sorted(checks) == ["monitoring/fraud_detection_v1/feature_drift:feature_drift",
                              "monitoring/fraud_detection_v1/realized_performance:realized_performance",
                              "monitoring/fraud_detection_v1/skew:training_serving_skew"]
    assert not any(spec.blocking for spec in checks.values())
    served_day = definitions.resolve_job_def("monitor_served_day")
    assert {key.to_user_string() for key in served_day.asset_layer.executable_asset_keys} == {
        "monitoring/fraud_detection_v1/feature_drift", "monitoring/fraud_detection_v1/skew"}
    assert definitions.resolve_schedule_def("monitor_served_day_schedule").cron_schedule == "0 2 * * *"
    realized = definitions.resolve_schedule_def("realized_performance_nightly")
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 12, 20, 3, tzinfo=timezone.utc),
                                        repository_def=definitions.get_repository_def())
    # The day that ended 15 days before: its last transaction is 14 days old, its labels matured.
    assert realized.evaluate_tick(context).run_requests[0].partition_key == "2026-12-05"


def test_a_new_feature_view_yields_its_assets_without_touching_assets():
    settings = load_settings()
    repo = load_repo_contents(settings)
    view = next(v for v in repo.feature_views if v.name == "user_velocity")
    clone = view.__copy__()
    clone.name = "user_velocity_v2"
    assets = feature_view_assets([clone], repo.entities, daily_partitions(settings), settings.feature_repo_dir)
    keys = {key.to_user_string() for asset in assets for key in asset.keys}
    assert keys == {"features/user_velocity_v2", "online/user_velocity_v2"}


def test_dagster_definitions_validate_passes():
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_asset_checks_snapshot(definitions):
    graph = definitions.resolve_asset_graph()
    checks = {  # the data-quality checks (assets/checks.py, assets/freshness.py)
        key.to_user_string(): graph.get_check_spec(key) for key in graph.asset_check_keys
        if key.asset_key.path[0] in ("raw", "features", "online")
    }
    assert sorted(checks) == [
        "features/merchant_risk:expectation_suite", "features/merchant_risk:freshness_check",
        "features/user_velocity:expectation_suite", "features/user_velocity:freshness_check",
        "online/merchant_risk:online_freshness", "online/merchant_risk:online_offline_consistency",
        "online/user_velocity:online_freshness", "online/user_velocity:online_offline_consistency",
        "raw/chargebacks:expectation_suite", "raw/merchants:expectation_suite",
        "raw/transactions:expectation_suite", "raw/users:expectation_suite",
    ]
    assert sorted(name for name, spec in checks.items() if spec.blocking) == sorted(
        name for name in checks if name.endswith(":expectation_suite")
    )
    freshness = definitions.resolve_job_def("freshness_checks")
    assert {key.to_user_string() for key in freshness.asset_layer.asset_graph.asset_check_keys} == {
        name for name in checks if "freshness" in name
    }
    assert {sensor.name for sensor in definitions.sensors} >= {"freshness_checks_sensor", "alert_on_failed_checks", "alert_on_failed_runs"}


def test_the_platform_resource_carries_the_settings_dagster_needs(tmp_path):
    from dataclasses import replace

    from assets.resources import PlatformResource
    from core.settings import StreamSettings, load_settings

    # The demo's default: no start date (the first landed day); a deployment's log partitions.
    settings = replace(load_settings(), state_dir=tmp_path, start_date=None, stream=StreamSettings(partitions=8),
                       feature_repo_dir=tmp_path / "feature_repo", redis_url="redis://127.0.0.1:6390/3")
    rebuilt = PlatformResource.from_settings(settings).settings
    assert rebuilt.start_date is None and rebuilt.stream.partitions == 8
    assert rebuilt.feature_repo_dir == tmp_path / "feature_repo" and rebuilt.redis_url == "redis://127.0.0.1:6390/3"
    # A URL with a password stays out of the resource's values: Dagster reads it from REDIS_URL where it runs.
    guarded = PlatformResource.from_settings(replace(settings, redis_url="redis://:pw@127.0.0.1:6390/3"))
    assert isinstance(guarded.redis_url, dg.EnvVar) and guarded.redis_url.env_var_name == "REDIS_URL"
    assert rebuilt.state_dir == tmp_path and rebuilt.feast_project == settings.feast_project
