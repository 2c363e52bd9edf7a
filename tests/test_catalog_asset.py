"""The `catalog` Dagster asset, materialized in-process on a temporary instance over the real
feature_repo/ definitions and a hand-made offline partition."""

from __future__ import annotations

from dataclasses import replace

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.asset import CATALOG_KEY, catalog_asset
from core.settings import load_settings

pytestmark = pytest.mark.integration


VELOCITY_INT = ["txn_count_1h", "txn_count_24h", "txn_count_7d", "distinct_merchants_24h"]
VELOCITY_FLOAT = ["amount_sum_1h", "amount_sum_24h", "amount_sum_7d", "amount_mean_7d", "seconds_since_prev_txn"]


def write_user_velocity(path, rows: int, newest: datetime) -> None:
    path.mkdir(parents=True)
    columns = {"user_id": pa.array(range(rows), pa.int64()),
               "event_timestamp": pa.array([newest - timedelta(minutes=i) for i in range(rows)], pa.timestamp("us", tz="UTC"))}
    columns |= {name: pa.array([i % 7 + 1 for i in range(rows)], pa.int64()) for name in VELOCITY_INT}
    columns |= {name: pa.array([None if i % 4 == 0 else i * 1.5 for i in range(rows)], pa.float64()) for name in VELOCITY_FLOAT}
    pq.write_table(pa.table(columns), path / "part-00000.parquet")


def test_catalog_asset_depends_on_every_feature_and_online_asset():
    asset = catalog_asset(load_settings(), ["user_velocity", "merchant_risk"])
    assert asset.key == CATALOG_KEY
    assert {key.to_user_string() for key in asset.dependency_keys} == {
        "features/user_velocity", "online/user_velocity", "features/merchant_risk", "online/merchant_risk"}


def test_materializing_the_catalog_asset_writes_snapshot_and_pages(tmp_path):
    settings = replace(load_settings(), state_dir=tmp_path / "state", data_dir=tmp_path / "state" / "data")
    day = datetime.now(timezone.utc).date()
    newest = datetime.now(timezone.utc) - timedelta(hours=1)
    write_user_velocity(settings.offline_dir / "user_velocity" / f"date={day.isoformat()}", 100, newest)
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(["features", "user_velocity"]), check_name="user_velocity_suite", passed=False,
        partition=day.isoformat(), metadata={"unexpected": 3}))

    result = dg.materialize([catalog_asset(settings, ["user_velocity", "merchant_risk"])], instance=instance)

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
    assert velocity["pipeline"]["name"] == "windowed"
    stats = {f["name"]: f["stats"] for f in snapshot["features"] if f["view"] == "user_velocity"}
    assert stats["txn_count_1h"]["max"] == 7 and stats["seconds_since_prev_txn"]["null_rate"] == 0.25
    assert views["merchant_risk"]["offline"]["rows"] == 0
    assert {"raw:transactions", "feature_view:user_velocity", "feature_service:fraud_detection_v1"} <= {
        node["id"] for node in snapshot["lineage"]["nodes"]}
    assert (directory / "index.html").exists() and (directory / "feature-user_velocity.txn_count_1h.html").exists()
