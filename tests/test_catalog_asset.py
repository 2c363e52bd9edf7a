"""The `catalog` Dagster asset, materialized in-process on a temporary instance over the real
feature_repo/ definitions and a hand-made offline partition."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import dagster as dg

from catalog.asset import CATALOG_KEY, catalog_asset
from featurestack.settings import load_settings
from test_catalog_snapshot import write_offline_partition


def test_catalog_asset_depends_on_every_feature_and_online_asset():
    asset = catalog_asset(["user_velocity", "merchant_risk"])
    assert asset.key == CATALOG_KEY
    assert {key.to_user_string() for key in asset.dependency_keys} == {
        "features/user_velocity", "online/user_velocity", "features/merchant_risk", "online/merchant_risk"}


def test_materializing_the_catalog_asset_writes_snapshot_and_pages(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATURESTACK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("FEATURESTACK_DATA_DIR", raising=False)
    settings = load_settings()
    day = datetime.now(timezone.utc).date()
    newest = datetime.now(timezone.utc) - timedelta(hours=1)
    write_offline_partition(settings.offline_dir / "user_velocity", day.isoformat(), 100, newest=newest, seed=3)
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(["features", "user_velocity"]), check_name="user_velocity_suite", passed=False,
        partition=day.isoformat(), metadata={"unexpected": 3}))

    result = dg.materialize([catalog_asset(["user_velocity", "merchant_risk"])], instance=instance)

    assert result.success
    metadata = result.asset_materializations_for_node("catalog")[0].metadata
    assert metadata["features"].value == 15 and metadata["feature_views"].value == 2
    assert metadata["failing_validation"].value == "user_velocity"
    directory = settings.state_dir / "catalog"
    snapshot = json.loads((directory / "catalog.json").read_text())
    views = {view["name"]: view for view in snapshot["feature_views"]}
    velocity = views["user_velocity"]
    assert velocity["offline"]["rows"] == 100 and velocity["validation"]["status"] == "failing"
    assert velocity["freshness"]["offline"]["status"] == "fresh"
    assert velocity["pipeline"]["name"] == "user_velocity"
    assert views["merchant_risk"]["offline"]["rows"] == 0
    assert {"raw:transactions", "feature_view:user_velocity", "feature_service:fraud_detection_v1"} <= {
        node["id"] for node in snapshot["lineage"]["nodes"]}
    assert (directory / "index.html").exists() and (directory / "feature-user_velocity.txn_count_1d.html").exists()
