"""Feast stays the contract for the streamed view: FeatureStore.push() updates it, and
get_online_features returns what the stream processor wrote."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
import redis

from eventlog.events import encode_record
from eventlog.redis_streams import RedisEventLog
from core.feast_repo import open_store
from onlinestore.online_reader import OnlineFeatureReader
from onlinestore.redis_layout import redis_key, serialize_entity_key
from streaming.processor import StreamProcessor
from streaming.views import streamed_views

pytestmark = pytest.mark.integration

NEW_USERS = (10**12 + 1, 10**12 + 2)  # users the platform never generated: the test removes them again


@pytest.fixture
def new_users(platform):
    yield NEW_USERS
    client = redis.Redis.from_url(platform.redis.url)
    client.delete(*(redis_key(platform.settings.feast_project, serialize_entity_key({"user_id": u}, {"user_id": "int64"}))
                    for u in NEW_USERS))
    log_keys = client.keys(f"featurestack:{platform.settings.feast_project}:events:*")
    if log_keys:
        client.delete(*log_keys)
    client.close()


def _online(store, user: int) -> dict:
    view = store.get_feature_view("user_velocity")
    refs = [f"user_velocity:{field.name}" for field in view.features]
    return store.get_online_features(features=refs, entity_rows=[{"user_id": user}]).to_dict()


def test_push_updates_the_streamed_view(platform, new_users):
    settings = platform.settings
    store = open_store(settings, platform.redis.url)
    from feast.data_source import PushMode

    row = {"user_id": new_users[0], "event_timestamp": pd.Timestamp(datetime.now(timezone.utc)), "txn_count_1h": 3, "txn_count_24h": 4,
           "txn_count_7d": 5, "amount_sum_1h": 30.0, "amount_sum_24h": 40.0, "amount_sum_7d": 50.0, "amount_mean_7d": 10.0,
           "distinct_merchants_24h": 2, "seconds_since_prev_txn": 12.5}
    store.push("user_velocity_push", pd.DataFrame([row]), to=PushMode.ONLINE)
    online = _online(store, new_users[0])
    assert online["txn_count_1h"] == [3] and online["seconds_since_prev_txn"] == [12.5]


def test_get_online_features_returns_the_streamed_values(platform, new_users):
    settings = platform.settings
    url = platform.redis.url
    view = streamed_views(settings, url)["user_velocity"]
    client = redis.Redis.from_url(url)
    log = RedisEventLog(client, settings.feast_project, "transactions", "user_id", settings.stream.partitions, "windows:user_velocity")
    start = datetime.now(timezone.utc) - timedelta(minutes=30)
    log.append([encode_record({"txn_id": f"feast-{n}", "user_id": new_users[1], "merchant_id": 7 + n % 2, "amount": 10.0 + n,
                               "event_timestamp": start + timedelta(minutes=n)}) for n in range(5)])
    processor = StreamProcessor(client, settings.feast_project, view.spec, view.layout, settings.stream.partitions)
    deadline = time.monotonic() + 60
    while any(log.lag().values()) and time.monotonic() < deadline:
        processor.step()
    store = open_store(settings, url)
    online = _online(store, new_users[1])
    assert online["txn_count_1h"] == [5] and online["amount_sum_1h"] == [60.0] and online["distinct_merchants_24h"] == [2]
    assert online["seconds_since_prev_txn"] == [60.0] and online["amount_mean_7d"] == [12.0]
    ours = OnlineFeatureReader(client, settings.feast_project, [view.layout], [f"user_velocity:{n}" for n in view.spec.feature_names])
    assert ours.read({"user_id": [new_users[1]]}).values[0].tolist() == [5, 5, 5, 60.0, 60.0, 60.0, 12.0, 2, 60.0]
