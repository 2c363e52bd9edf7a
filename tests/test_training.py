"""Training: PIT-correct training sets (hand-made data), leakage detection, manifest round trip."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from core.artifacts import ModelManifest
from core.feast_repo import open_store
from serving.predictor import Predictor
from training.labels import LabelWindow, labelled_transactions
from training.train import training_set, view_fingerprint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, redis_url):
    """A Feast repo with one view (TTL 1 h) over hand-made rows, DuckDB offline store."""
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, RepoConfig
    from feast.data_format import ParquetFormat
    from feast.types import Int64
    from feast.value_type import ValueType

    from core.redis_server import feast_connection_string

    repo = tmp_path_factory.mktemp("pit_repo")
    (repo / "counts" / "date=2026-11-02").mkdir(parents=True)
    pq.write_table(pa.table({
        "user_id": pa.array([1, 1, 3], pa.int64()),
        "event_timestamp": pa.array([T0, T0 + timedelta(hours=2), T0], pa.timestamp("us", tz="UTC")),
        "txn_count": pa.array([1, 2, 30], pa.int64()),
    }), repo / "counts" / "date=2026-11-02" / "part-00000.parquet")
    store = FeatureStore(config=RepoConfig(
        project="fs_pit_test", registry=str(repo / "registry.db"), provider="local",
        online_store={"type": "redis", "connection_string": feast_connection_string(redis_url)},
        offline_store={"type": "duckdb"}, entity_key_serialization_version=3, repo_path=str(repo),
    ))
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    view = FeatureView(name="counts", entities=[user], ttl=timedelta(hours=1), schema=[Field(name="txn_count", dtype=Int64)],
                       source=FileSource(path=str(repo / "counts"), file_format=ParquetFormat(), timestamp_field="event_timestamp"))
    service = FeatureService(name="counts_service", features=[view])
    store.apply([user, view, service])
    return store


def test_pit_join_never_looks_ahead_respects_ttl_and_keeps_rows_without_features(tiny_store):
    cases = [  # (user_id, entity time, expected txn_count)
        (1, T0 - timedelta(minutes=1), None),                 # before any feature row
        (1, T0, 1),                                           # the same instant is known
        (1, T0 + timedelta(minutes=59), 1),                   # within TTL
        (1, T0 + timedelta(hours=1, minutes=1), None),        # older than the TTL of 1 h
        (1, T0 + timedelta(hours=2) - timedelta(microseconds=1), None),  # the next row is a microsecond in the future
        (1, T0 + timedelta(hours=2), 2),
        (2, T0 + timedelta(minutes=5), None),                 # an entity with no features at all
    ]
    entity_df = pd.DataFrame({"user_id": [c[0] for c in cases], "event_timestamp": [c[1] for c in cases], "case": range(len(cases))})
    result = tiny_store.get_historical_features(entity_df=entity_df, features=tiny_store.get_feature_service("counts_service")).to_df()
    result = result.sort_values("case")
    assert len(result) == len(cases)
    got = [None if pd.isna(v) else int(v) for v in result["txn_count"]]
    assert got == [c[2] for c in cases]


def test_a_naive_latest_value_join_leaks_and_is_detectably_different(platform):
    settings = platform.settings
    store = open_store(settings, platform.redis.url)
    entities = labelled_transactions(settings, LabelWindow.for_service({}))
    frame, refs = training_set(store, store.get_feature_service("fraud_detection_v1"), entities)
    latest = duckdb.sql(f"""
        SELECT user_id, arg_max(txn_count_7d, event_timestamp) AS naive_txn_count_7d
        FROM read_parquet('{settings.offline_dir / "user_velocity"}/*/*.parquet') GROUP BY user_id
    """).df()
    naive = frame.merge(latest, on="user_id", how="left")
    differs = (naive["naive_txn_count_7d"].fillna(-1) != naive["user_velocity:txn_count_7d"].fillna(-1)).mean()
    assert differs > 0.5
    # Over 3 days a 7-day count only grows, so a value from before the transaction never exceeds the latest.
    assert (frame["user_velocity:txn_count_7d"].fillna(0) < naive["naive_txn_count_7d"].fillna(0) + 1).all()


def test_model_beats_chance_and_the_manifest_pins_what_it_was_trained_on(platform, trained_model):
    manifest = ModelManifest.read(trained_model.model_dir)
    assert manifest == trained_model.manifest
    store = open_store(platform.settings, platform.redis.url)
    service = store.get_feature_service("fraud_detection_v1")
    assert manifest.feature_service == "fraud_detection_v1"
    assert list(manifest.feature_refs) == [f"{p.name_to_use()}:{f.name}" for p in service.feature_view_projections for f in p.features]
    for view, pin in manifest.feature_views.items():
        assert pin.fingerprint == view_fingerprint(store.get_feature_view(view))
    training = manifest.training
    assert training.training_window["test"][0] > training.training_window["train"][1]
    assert training.rows["train"] > 0 and training.rows["test"] > 0
    assert training.metrics["test_roc_auc"] > 0.65
    assert training.metrics["test_pr_auc"] > 2 * training.metrics["test_base_rate"]


def test_serving_predictor_loads_the_manifest_and_reads_exactly_its_features(platform, trained_model):
    client = redis.Redis.from_url(platform.redis.url)
    predictor = Predictor(trained_model.model_dir, client)
    assert predictor.reader.feature_refs == list(trained_model.manifest.feature_refs)
    scored = predictor.predict({"user_id": np.array([1, 2], np.int64), "merchant_id": np.array([1, 2], np.int64)},
                               np.array([10.0, 5000.0]), time.time_ns())
    client.close()
    assert scored.features.values.shape == (2, len(trained_model.manifest.feature_refs))
    assert ((scored.scores >= 0) & (scored.scores <= 1)).all()


def test_training_assets_gate_promotion_with_blocking_checks(platform, trained_model):
    """In Dagster the model carries one blocking check per gate criterion; the champion asset, downstream
    of them, moves the alias only when all passed."""
    import dagster as dg

    from assets.definitions import TRAINING_JOB, build_definitions
    from core.model_registry import CHAMPION, ModelRegistry
    from training.promotion import GATE_CHECKS

    settings = platform.settings
    registry = ModelRegistry(settings.tracking_uri, settings.model_cache_dir)
    champion_before = registry.by_alias("fraud_mlp", CHAMPION)
    result = build_definitions(settings).resolve_job_def(TRAINING_JOB).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    assert sorted(checks) == sorted(GATE_CHECKS)
    model_event = result.asset_materializations_for_node("training__fraud_detection_v1__model")[0]
    version = model_event.metadata["registered_version"].value
    floor = checks["beats_metric_floor"]
    assert floor.metadata["threshold"].value == 0.75
    assert floor.passed == (model_event.metadata["test_roc_auc"].value >= 0.75)
    champion_events = result.asset_materializations_for_node("training__fraud_detection_v1__champion")
    champion_after = registry.by_alias("fraud_mlp", CHAMPION)
    if all(check.passed for check in checks.values()):
        assert [event.metadata["champion_version"].value for event in champion_events] == [version]
        assert champion_after.version == version
    else:
        assert champion_events == []
        assert champion_after == champion_before


def test_the_catalog_lists_the_trained_model_against_its_features(platform, trained_model):
    """The real training's registered version read by the real catalog: the model, its versions with
    run links, its service and every feature it uses."""
    from catalog.snapshot import build_snapshot

    manifest = trained_model.manifest
    snapshot = build_snapshot(platform.settings)
    [model] = [m for m in snapshot["models"] if m["name"] == manifest.model]
    assert "error" not in model and model["feature_service"] == manifest.feature_service
    [version] = [v for v in model["versions"] if v["run_id"] == trained_model.run_id]
    assert version["version"] == trained_model.registered.version
    assert version["run_url"].endswith(f"/#/experiments/{trained_model.experiment_id}/runs/{trained_model.run_id}")
    assert model["feature_views"] == {view: pin.fingerprint for view, pin in manifest.feature_views.items()}
    assert sorted(model["uses"]) == sorted(manifest.feature_refs)
    features = {f["id"]: f for f in snapshot["features"]}
    assert all(manifest.model in features[ref]["models"] for ref in manifest.feature_refs)
    assert {"source": f"feature_service:{manifest.feature_service}", "target": f"model:{manifest.model}"} in snapshot["lineage"]["edges"]
