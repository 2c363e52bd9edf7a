"""The golden path end to end: generate 3 days, materialize the whole graph in-process with Dagster,
read features back through the Feast SDK (online and historical, both offline profiles)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import duckdb
import pandas as pd
import pytest

from core.feast_repo import apply_repo, open_store, write_feast_config
from featurestack.platform_run import run_platform
from support import PLATFORM_DAYS as DAYS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _latest_offline(settings, view: str, join_key: str) -> pd.DataFrame:
    query = f"""
        SELECT * EXCLUDE (date) FROM read_parquet('{settings.offline_dir / view}/*/*.parquet', hive_partitioning = true)
        QUALIFY row_number() OVER (PARTITION BY {join_key} ORDER BY event_timestamp DESC) = 1
        ORDER BY {join_key}
    """
    return duckdb.sql(query).df()


def _same(online, offline) -> bool:
    if offline is None or (isinstance(offline, float) and math.isnan(offline)):
        return online is None
    return online == offline


@pytest.mark.parametrize(("view", "join_key"), [("user_velocity", "user_id"), ("merchant_risk", "merchant_id")])
def test_online_values_equal_latest_offline_values(platform, view, join_key):
    settings = platform.settings
    store = open_store(settings, platform.redis.url)
    latest = _latest_offline(settings, view, join_key)
    sample = latest.sample(n=min(60, len(latest)), random_state=3)
    features = [field.name for field in store.get_feature_view(view).features]
    online = store.get_online_features(
        features=[f"{view}:{name}" for name in features],
        entity_rows=[{join_key: int(key)} for key in sample[join_key]],
    ).to_dict()
    mismatches = [
        (key, name, online[name][row], expected[name])
        for row, (key, expected) in enumerate(zip(sample[join_key], sample.to_dict("records")))
        for name in features
        if not _same(online[name][row], expected[name])
    ]
    assert len(sample) > 10 and mismatches == []


def test_every_day_and_asset_ran_and_materializations_are_registered(platform):
    assert platform.ran == ["platform_setup", *(f"daily_features[{day.isoformat()}]" for day in platform.days), "refresh_catalog"]
    assert platform.failed == [] and platform.blocked == []
    store = open_store(platform.settings, platform.redis.url)
    for view in ("user_velocity", "merchant_risk"):
        intervals = store.get_feature_view(view).materialization_intervals
        assert len(intervals) == DAYS


def _offline_digests(settings) -> dict[str, str]:
    return {
        str(path.relative_to(settings.data_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(settings.data_dir.glob("*/*/date=*/*.parquet"))
    }


def test_second_run_skips_everything_and_a_forced_rerun_changes_nothing(platform):
    before = _offline_digests(platform.settings)
    again = run_platform(platform.settings)
    assert again.ran == [] and len(again.skipped) == DAYS + 1
    rerun = run_platform(platform.settings, days=1, force=True)
    assert rerun.ran == ["platform_setup", f"daily_features[{platform.days[0].isoformat()}]", "refresh_catalog"]
    assert _offline_digests(platform.settings) == before


def test_historical_retrieval_is_identical_in_both_offline_profiles(platform):
    settings = platform.settings
    # Labelled transactions at their transaction time, as a training job asks.
    entity_df = duckdb.sql(f"""
        SELECT user_id, merchant_id, event_timestamp
        FROM read_parquet('{settings.raw_dir / 'transactions'}/*/*.parquet')
        ORDER BY hash(txn_id) LIMIT 300
    """).df()
    local_store = open_store(settings, platform.redis.url)
    local = local_store.get_historical_features(entity_df=entity_df, features=local_store.get_feature_service("fraud_detection_v1")).to_df()

    spark_settings = replace(settings, offline_profile="spark")
    try:
        apply_repo(spark_settings, platform.redis.url)
        spark_store = open_store(spark_settings, platform.redis.url)
        on_spark = spark_store.get_historical_features(entity_df=entity_df, features=spark_store.get_feature_service("fraud_detection_v1")).to_df()
    finally:
        write_feast_config(settings, platform.redis.url)  # the generated config of the state: the local profile again

    def normalized(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
        columns = sorted(frame.columns)
        return frame[columns].sort_values(["user_id", "merchant_id", "event_timestamp"]).reset_index(drop=True).astype(
            {name: "float64" for name in columns if name not in ("user_id", "merchant_id", "event_timestamp")}
        )

    assert len(local) == len(entity_df)  # no entity row dropped
    assert local["txn_count_7d"].notna().sum() > len(local) // 2  # features really joined
    pd.testing.assert_frame_equal(normalized(local), normalized(on_spark), check_exact=False, rtol=1e-12)
