"""`featurestack train` appears in Dagster: the training assets are materialized on the platform's
instance with the model's metrics as metadata, and the metric-floor check is recorded."""

from __future__ import annotations

import pytest

import json

import dagster as dg

from assets.training import METRIC_FLOOR_CHECK, model_key, training_set_key
from featurestack.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_featurestack_train_records_the_training_assets(platform, capsys):
    settings = platform.settings
    returncode = main(["train", "--epochs", "2"])
    assert returncode in (0, 1)  # 1: trained but below the metric floor (recorded all the same)
    assert "recorded in Dagster" in capsys.readouterr().out
    model_dir = max((settings.models_dir / "fraud_detection_v1").glob("2*"))
    manifest = json.loads((model_dir / "manifest.json").read_text())

    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        model = instance.get_latest_materialization_event(model_key("fraud_detection_v1")).asset_materialization
        assert model.metadata["test_roc_auc"].value == round(manifest["training"]["metrics"]["test_roc_auc"], 4)
        assert model.metadata["model_version"].value == manifest["version"]
        assert model.metadata["promoted"].value == (returncode == 0)
        training_set = instance.get_latest_materialization_event(training_set_key("fraud_detection_v1")).asset_materialization
        assert training_set.metadata["dagster/row_count"].value == manifest["training"]["rows"]["train"] + manifest["training"]["rows"]["test"]
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(model_key("fraud_detection_v1"), METRIC_FLOOR_CHECK)]
        )[dg.AssetCheckKey(model_key("fraud_detection_v1"), METRIC_FLOOR_CHECK)]
        assert check.event.dagster_event.event_specific_data.passed == (returncode == 0)
