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
