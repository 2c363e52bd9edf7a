"""`featurestack train` appears in Dagster: the training assets are materialized on the platform's
instance with the model's metrics and registered version as metadata, every gate check is recorded, and
the champion asset when the gate promoted the version."""

from __future__ import annotations

import pytest

import dagster as dg

from assets.training import champion_key, model_key, training_set_key
from core.model_registry import CHAMPION, ModelRegistry
from featurestack.cli import main
from support import platform_environment
from training.promotion import GATE_CHECKS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_featurestack_train_records_the_training_assets_and_the_gate(platform, capsys):
    settings = platform.settings
    # The command reads its settings from the environment (the edge): the platform's.
    with platform_environment(settings.state_dir, settings.feast_project, platform.redis.url):
        returncode = main(["train", "--epochs", "2"])
    assert returncode in (0, 1)  # 1: registered, but the gate refused it (recorded all the same)
    out = capsys.readouterr().out
    assert "recorded in Dagster" in out and "mlflow   run" in out
    registry = ModelRegistry(settings.tracking_uri, settings.model_cache_dir)
    newest = registry.versions("fraud_mlp")[0]
    assert (f"registry fraud_mlp version {newest.version}, alias challenger") in out
    assert newest.tags["gate_passed"] == ("true" if returncode == 0 else "false")
    if returncode == 0:
        assert registry.by_alias("fraud_mlp", CHAMPION).version == newest.version
    else:
        assert "NOT promoted: " in out

    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        model = instance.get_latest_materialization_event(model_key("fraud_detection_v1")).asset_materialization
        run = registry.client.get_run(newest.run_id)
        assert model.metadata["test_roc_auc"].value == round(run.data.metrics["test_roc_auc"], 4)
        assert model.metadata["registered_version"].value == newest.version
        assert model.metadata["mlflow_run_id"].value == newest.run_id
        training_set = instance.get_latest_materialization_event(training_set_key("fraud_detection_v1")).asset_materialization
        assert training_set.metadata["dagster/row_count"].value == int(run.data.metrics["rows.train"] + run.data.metrics["rows.test"])
        keys = [dg.AssetCheckKey(model_key("fraud_detection_v1"), name) for name in GATE_CHECKS]
        executions = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
        passed = {key.name: executions[key].event.dagster_event.event_specific_data.passed for key in keys}
        assert all(passed.values()) == (returncode == 0)
        champion = instance.get_latest_materialization_event(champion_key("fraud_detection_v1"))
        if returncode == 0:
            assert champion.asset_materialization.metadata["champion_version"].value == newest.version
