"""core.settings: the one reader of the environment refuses values it does not know, by name."""

from __future__ import annotations

import pytest

from core.settings import load_settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("name", "value"), [("FEATURESTACK_REDIS_WRITE_MODE", "restore"), ("REDIS_TYPE", "sentinel"),
                                             ("FEATURESTACK_OFFLINE_PROFILE", "dask")])
def test_unknown_values_are_refused_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        load_settings()


def test_the_write_mode_defaults_to_restore_for_new_keys_and_can_force_hset(monkeypatch):
    monkeypatch.delenv("FEATURESTACK_REDIS_WRITE_MODE", raising=False)
    assert load_settings().redis_write_mode == "auto"
    monkeypatch.setenv("FEATURESTACK_REDIS_WRITE_MODE", "hset")
    assert load_settings().redis_write_mode == "hset"


@pytest.mark.parametrize(("variables", "named"), [
    ({"FEATURESTACK_SERVING_ROUTING": "ab"}, "FEATURESTACK_SERVING_ROUTING"),
    ({"FEATURESTACK_SERVING_CANARY_SHARE": "1.5"}, "FEATURESTACK_SERVING_CANARY_SHARE"),
    ({"FEATURESTACK_SERVING_RELOAD_INTERVAL_S": "-1"}, "FEATURESTACK_SERVING_RELOAD_INTERVAL_S"),
    ({"FEATURESTACK_SERVING_MODEL_URI": "models:/fraud_mlp/3"}, "models:/<name>@<alias>"),
    ({"FEATURESTACK_SERVING_ROUTING": "canary", "FEATURESTACK_MODEL_DIR": "/models/x"}, "FEATURESTACK_MODEL_DIR"),
])
def test_serving_routing_settings_are_checked_naming_the_variable(monkeypatch, variables, named):
    monkeypatch.delenv("FEATURESTACK_MODEL_DIR", raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=named):
        load_settings()


def test_serving_follows_the_champion_alias_unless_a_folder_is_given(monkeypatch, tmp_path):
    for name in ("FEATURESTACK_MODEL_DIR", "FEATURESTACK_SERVING_MODEL_URI", "FEATURESTACK_SERVING_ROUTING",
                 "FEATURESTACK_MODEL_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FEATURESTACK_STATE_DIR", str(tmp_path))
    settings = load_settings()
    assert (settings.serving.model_dir, settings.serving.model_uri, settings.serving.routing) == ("", "models:/fraud_mlp@champion", "none")
    assert settings.model_cache_dir == tmp_path / "mlflow" / "model-cache"
    monkeypatch.setenv("FEATURESTACK_SERVING_ROUTING", "canary")
    monkeypatch.setenv("FEATURESTACK_SERVING_CANARY_SHARE", "0.25")
    monkeypatch.setenv("FEATURESTACK_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    settings = load_settings()
    assert (settings.serving.routing, settings.serving.canary_share, settings.serving.challenger_alias) == ("canary", 0.25, "challenger")
    assert settings.model_cache_dir == tmp_path / "cache"
