"""The demo's days end yesterday (UTC) unless FEATURESTACK_START_DATE says otherwise, and the daily
partitions start at the first landed day, so a fresh `make demo` is fresh; tests keep fixed dates."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from assets.partitions import daily_partitions
from featurestack.cli import main
from core.settings import load_settings, utc_today
from core import lake

pytestmark = pytest.mark.integration


def test_generate_defaults_to_days_ending_yesterday_and_partitions_follow(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FEATURESTACK_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("FEATURESTACK_DATA_DIR", raising=False)
    monkeypatch.delenv("FEATURESTACK_START_DATE", raising=False)
    assert main(["generate", "--days", "2", "--transactions-per-day", "40"]) == 0
    settings = load_settings()
    yesterday = utc_today() - timedelta(days=1)
    assert lake.partition_dates(settings.landing_dir / "transactions") == [yesterday - timedelta(days=1), yesterday]
    keys = daily_partitions(settings).get_partition_keys()
    assert keys == [(yesterday - timedelta(days=1)).isoformat(), yesterday.isoformat()]  # today is not complete yet


def test_a_start_date_setting_still_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATURESTACK_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("FEATURESTACK_DATA_DIR", raising=False)  # else the session platform's lake (exported by Feast setup)
    monkeypatch.setenv("FEATURESTACK_START_DATE", "2026-11-01")
    assert main(["generate", "--days", "1", "--transactions-per-day", "40"]) == 0
    settings = load_settings()
    assert lake.partition_dates(settings.landing_dir / "transactions") == [date(2026, 11, 1)]
    assert daily_partitions(settings).get_partition_keys()[0] == "2026-11-01"
