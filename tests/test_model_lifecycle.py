"""The model lifecycle on real MLflow: `featurestack train` logs a run (Feast's integration) and
registers a version; labels are those reported by the cutoff; the promotion gate makes the first
version champion and refuses a second that does not beat it, saying why; `featurestack models
promote | rollback` move the alias. Each test has a tracking store of its own (sqlite under tmp, or a
fresh Postgres database) over the session platform's data."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from core.feast_repo import open_store
from core.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from support import untimed_gate_policy
from training.train import train

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CUTOFF = datetime(2026, 11, 3, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def own_store(platform, tmp_path):
    """The platform's settings with a tracking store of the test's own."""
    return replace(platform.settings, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_a_run_records_what_was_trained_and_feast_returns_its_entity_rows(platform, own_store):
    import mlflow

    result = train(own_store, platform.redis.url, epochs=2)
    store = open_store(own_store, platform.redis.url)
    run = store.mlflow.client.get_run(result.run_id)
    training = result.manifest.training
    assert run.data.params["feature_service"] == "fraud_detection_v1"
    assert run.data.params["label_cutoff"] == training.labels["cutoff"]
    for name in ("test_roc_auc", "test_pr_auc", "test_calibration_error", "test_matured_roc_auc", "train_roc_auc"):
        assert run.data.metrics[name] == pytest.approx(training.metrics[name], rel=1e-12)
    holdout_day = training.training_window["test"][0]  # one holdout day: its metrics are the holdout's
    assert run.data.metrics[f"day.{holdout_day}.roc_auc"] == pytest.approx(training.metrics["test_roc_auc"], rel=1e-12)
    assert run.data.tags["feast.feature_service"] == "fraud_detection_v1"
    assert run.data.tags["feast.feature_refs"] == ",".join(result.manifest.feature_refs)
    described = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/feature_service.json")
    assert described["feature_views"] == {view: pin.fingerprint for view, pin in result.manifest.feature_views.items()}
    # The run's artifacts live under the state folder; nothing lands in the working directory.
    assert run.info.artifact_uri.startswith(own_store.mlflow_artifact_root.as_uri())
    assert not Path("mlruns").exists() and not Path("mlflow.db").exists()

    entity_rows = store.mlflow.get_training_entity_df(result.run_id)
    assert len(entity_rows) == training.rows["train"] + training.rows["test"]
    assert int(entity_rows["is_fraud"].sum()) == training.rows["train_positives"] + training.rows["test_positives"]
    assert set(entity_rows.columns) >= {"txn_id", "user_id", "merchant_id", "event_timestamp"}

    registry = ModelRegistry(own_store.tracking_uri, own_store.model_cache_dir)
    [version] = registry.versions("fraud_mlp")
    assert (version.version, version.run_id, version.aliases) == ("1", result.run_id, (CHALLENGER,))
    assert version.tags["feast.feature_service"] == "fraud_detection_v1"
    fetched = registry.fetch(version)
    assert (fetched.model_dir / "manifest.json").read_bytes() == (result.model_dir / "manifest.json").read_bytes()
    assert (fetched.model_dir / "weights.npz").read_bytes() == (result.model_dir / "weights.npz").read_bytes()


def test_no_label_reported_after_the_cutoff_enters_training(platform, own_store):
    result = train(own_store, platform.redis.url, epochs=1, cutoff=CUTOFF)
    entity_rows = open_store(own_store, platform.redis.url).mlflow.get_training_entity_df(result.run_id)
    raw = own_store.raw_dir
    truth = duckdb.sql(f"""
        SELECT t.txn_id, t.event_timestamp, c.reported_timestamp
        FROM read_parquet('{raw / "transactions"}/*/*.parquet') t
        LEFT JOIN read_parquet('{raw / "chargebacks"}/*/*.parquet') c USING (txn_id)
    """).df().set_index("txn_id")
    used = truth.loc[entity_rows["txn_id"]]
    cutoff = CUTOFF.replace(tzinfo=None)
    reported = used["reported_timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)
    # Every transaction used happened before the cutoff, and later ones are not there at all.
    assert (used["event_timestamp"].dt.tz_convert("UTC").dt.tz_localize(None) < cutoff).all()
    assert len(entity_rows) == int((truth["event_timestamp"].dt.tz_convert("UTC").dt.tz_localize(None) < cutoff).sum())
    # A positive label is exactly a chargeback reported by the cutoff.
    assert (entity_rows["is_fraud"].to_numpy() == (reported <= cutoff).to_numpy()).all()
    later = (reported > cutoff).to_numpy()
    assert later.sum() > 0 and entity_rows["is_fraud"].to_numpy()[later].sum() == 0
    # On 2026-11-03 12:00 no 14-day label window of November 1-3 has matured.
    assert not entity_rows["label_matured"].any()
    assert result.manifest.training.rows["matured"] == 0
    assert "test_immature_rows" in result.manifest.training.metrics and "test_matured_roc_auc" not in result.manifest.training.metrics


def test_the_gate_promotes_the_first_refuses_a_second_and_rollback_moves_the_alias_back(platform, own_store, capsys):
    from assets.training import gate, promote_challenger
    from featurestack.models import list_models, promote, rollback
    from training.promotion import GATE_CHECKS

    first = train(own_store, platform.redis.url, epochs=2)
    verdict = gate(own_store, first, untimed_gate_policy(first))
    assert [check.name for check in verdict.checks] == list(GATE_CHECKS)
    assert verdict.passed, verdict.refusals
    assert promote_challenger(own_store, "fraud_mlp", note="test") == first.registered.version
    registry = ModelRegistry(own_store.tracking_uri, own_store.model_cache_dir)
    assert registry.by_alias("fraud_mlp", CHAMPION).version == first.registered.version
    assert registry.by_alias("fraud_mlp", CHALLENGER) is None

    # The same data, the same seed: the same model, which cannot beat the champion by the margin.
    second = train(own_store, platform.redis.url, epochs=2)
    assert second.champion.version == first.registered.version
    assert second.champion_metrics["test_roc_auc"] == second.manifest.training.metrics["test_roc_auc"]
    refused = gate(own_store, second, untimed_gate_policy(second))
    assert not refused.passed
    assert [reason.split(":")[0] for reason in refused.refusals] == ["beats_champion"]
    assert "does not beat it by the margin 0.005" in refused.refusals[0]
    with pytest.raises(ValueError, match="failed its gate: beats_champion"):
        promote(own_store, "fraud_mlp", None)
    assert registry.by_alias("fraud_mlp", CHALLENGER).version == second.registered.version

    # Version 2 forced to champion (as a passed gate would), then one command moves the alias back.
    registry.promote("fraud_mlp", second.registered.version, note="test: forced")
    rollback(own_store, "fraud_mlp")
    assert registry.by_alias("fraud_mlp", CHAMPION).version == first.registered.version
    assert registry.champion_history("fraud_mlp") == [first.registered.version]
    assert "rolled_back_at" in registry.get("fraud_mlp", second.registered.version).tags
    with pytest.raises(ValueError, match="no previous champion"):
        rollback(own_store, "fraud_mlp")
    capsys.readouterr()
    list_models(own_store, "fraud_mlp")
    listing = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in listing.splitlines()[2:-1]}
    assert rows == {second.registered.version: "-", first.registered.version: CHAMPION}
    assert f"/#/experiments/{first.experiment_id}/runs/{first.run_id}" in listing


@pytest.fixture
def postgres_store(platform):
    psycopg = pytest.importorskip("psycopg")
    name = f"fs_mlflow_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield replace(platform.settings, mlflow_tracking_uri=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def test_tracking_and_registry_on_postgres(platform, postgres_store):
    from assets.training import gate, promote_challenger

    result = train(postgres_store, platform.redis.url, epochs=2)
    assert gate(postgres_store, result, untimed_gate_policy(result)).passed
    promote_challenger(postgres_store, "fraud_mlp", note="test")
    registry = ModelRegistry(postgres_store.tracking_uri, postgres_store.model_cache_dir)
    [version] = registry.versions("fraud_mlp")
    assert (version.run_id, version.aliases, version.tags["gate_passed"]) == (result.run_id, (CHAMPION,), "true")
    run = registry.client.get_run(result.run_id)
    assert run.data.metrics["test_roc_auc"] == pytest.approx(result.manifest.training.metrics["test_roc_auc"], rel=1e-12)
    assert registry.fetch(version).model_dir.joinpath("manifest.json").is_file()
