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


def test_the_served_feature_log_is_on_by_default_and_its_settings_are_checked(monkeypatch):
    for name in ("FEATURESTACK_SERVED_LOG", "FEATURESTACK_SERVED_LOG_BUFFER_ROWS", "FEATURESTACK_SERVED_LOG_FLUSH_ROWS",
                 "FEATURESTACK_GPU_HOURLY_PRICE_USD"):
        monkeypatch.delenv(name, raising=False)
    serving = load_settings().serving
    assert serving.served_log is True and serving.served_log_flush_rows <= serving.served_log_buffer_rows
    assert serving.gpu_hourly_price_usd == 0
    monkeypatch.setenv("FEATURESTACK_SERVED_LOG", "0")
    monkeypatch.setenv("FEATURESTACK_GPU_HOURLY_PRICE_USD", "3.72")
    assert load_settings().serving.served_log is False and load_settings().serving.gpu_hourly_price_usd == 3.72
    for name, value in (("FEATURESTACK_SERVED_LOG", "maybe"), ("FEATURESTACK_SERVED_LOG_FLUSH_ROWS", "200000"),
                        ("FEATURESTACK_SERVED_LOG_FLUSH_INTERVAL_S", "0"), ("FEATURESTACK_GPU_HOURLY_PRICE_USD", "-1")):
        with monkeypatch.context() as changed:
            changed.setenv(name, value)
            with pytest.raises(ValueError, match=name):
                load_settings()


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
