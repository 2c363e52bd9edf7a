"""Adding a feature view is one new module (README, "Adding a feature view"): a copy of feature_repo/ gets
feature_views/merchant_activity.py for the existing merchant entity, and with nothing else changed the
platform on that repo shows its assets and checks in the Definitions, publishes its online keys to Redis
in a run, and lists it in the catalog. Cheap: one generated day of 300 transactions, its own Feast
project, state folder and repo copy."""

from __future__ import annotations

import shutil
import uuid

import dagster as dg
import pyarrow.parquet as pq
import pytest

from core.settings import FEATURE_REPO_DIR
from support import delete_project_keys, platform_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VIEW = "merchant_activity"

# What a user writes, the whole edit: one new file feature_repo/feature_views/merchant_activity.py.
THROWAWAY_VIEW = '''\
"""merchant_activity: what a merchant sold on the day."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64
from pyspark.sql import functions as F

from data_sources import offline_table_source
from entities import merchant
from pipelines.registry import FeaturePipeline

merchant_activity = FeatureView(
    name="merchant_activity",
    entities=[merchant],
    ttl=timedelta(days=2),
    source=offline_table_source("merchant_activity"),
    online=True,
    owner="risk-data@featurestack.dev",
    description="A merchant's sales on the day, as of its last transaction.",
    tags={"freshness_sla_hours": "48", "team": "fraud"},
    schema=[
        Field(name="sales_count_1d", dtype=Int64, description="Transactions on the day."),
        Field(name="amount_max_1d", dtype=Float64, description="The largest amount on the day."),
    ],
)


def build(tables, partition_date):
    return (
        tables["transactions"]
        .groupBy("merchant_id")
        .agg(F.count(F.lit(1)).alias("sales_count_1d"), F.max("amount").alias("amount_max_1d"),
             F.max("event_timestamp").alias("event_timestamp"))
    )


PIPELINE = FeaturePipeline(name=merchant_activity.name, inputs={"transactions": 0}, build=build)


def expectations(params):
    from validations.expect import between

    return [between("sales_count_1d", 1, None), between("amount_max_1d", 0, None, strict_low=True)]
'''


@pytest.fixture(scope="module")
def platform_with_a_new_view(tmp_path_factory, redis_url, spark):
    from featurestack.platform_run import run_platform
    from pipelines.generator import generate

    root = tmp_path_factory.mktemp("new_view")
    repo = root / "feature_repo"
    # As committed, minus the link to the default state's generated Feast config.
    shutil.copytree(FEATURE_REPO_DIR, repo, ignore=shutil.ignore_patterns("__pycache__", "feature_store.yaml"))
    (repo / "feature_views" / f"{VIEW}.py").write_text(THROWAWAY_VIEW)
    project = f"fs_newview_{uuid.uuid4().hex[:8]}"
    settings = platform_settings(root / "state", project, redis_url, feature_repo_dir=repo)
    try:
        generate(settings.landing_dir, settings.start_date, 1, 300, seed=13)
        outcome = run_platform(settings)
        yield settings, outcome
    finally:
        delete_project_keys(redis_url, project)


def test_the_new_view_has_its_assets_and_checks_in_the_definitions(platform_with_a_new_view):
    from assets.definitions import build_definitions

    settings, _ = platform_with_a_new_view
    graph = build_definitions(settings).resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {f"features/{VIEW}", f"online/{VIEW}"} <= keys
    assert sorted(key.to_user_string() for key in graph.get(dg.AssetKey(["features", VIEW])).parent_keys) == ["raw/transactions"]
    checks = {key.to_user_string() for key in graph.asset_check_keys if VIEW in key.asset_key.path}
    assert checks == {f"features/{VIEW}:expectation_suite", f"features/{VIEW}:freshness_check",
                      f"online/{VIEW}:online_freshness", f"online/{VIEW}:online_offline_consistency"}


def test_a_run_publishes_its_online_keys_that_feast_reads(platform_with_a_new_view, redis_url):
    from core.feast_repo import open_store
    from core.lake import partition_dir

    settings, outcome = platform_with_a_new_view
    assert outcome.failed == [] and outcome.blocked == [], (outcome.failed, outcome.blocked)
    assert outcome.ran == ["platform_setup", f"daily_features[{outcome.days[0]}]", "refresh_catalog"]
    offline = pq.read_table(partition_dir(settings.offline_dir / VIEW, outcome.days[0])).to_pylist()
    assert len(offline) > 10
    store = open_store(settings, redis_url)
    online = store.get_online_features(
        features=[f"{VIEW}:sales_count_1d", f"{VIEW}:amount_max_1d"],
        entity_rows=[{"merchant_id": row["merchant_id"]} for row in offline],
    ).to_dict()
    assert online["sales_count_1d"] == [row["sales_count_1d"] for row in offline]
    assert online["amount_max_1d"] == [row["amount_max_1d"] for row in offline]


def test_the_catalog_lists_the_new_view(platform_with_a_new_view):
    from catalog.snapshot import SNAPSHOT_FILE, catalog_dir, read_snapshot

    settings, _ = platform_with_a_new_view
    snapshot = read_snapshot(catalog_dir(settings) / SNAPSHOT_FILE)
    view = next(view for view in snapshot["feature_views"] if view["name"] == VIEW)
    assert [feature["name"] for feature in view["features"]] == ["sales_count_1d", "amount_max_1d"]
    assert view["owner"] == "risk-data@featurestack.dev"
    assert view["pipeline"] == {"name": VIEW, "module": f"feature_views/{VIEW}.py", "inputs": {"transactions": 0}}
