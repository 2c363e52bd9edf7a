"""The stream in Dagster: stream/user_velocity is observed (events waiting, lag, processors) and its
stream_lag check fails while events wait with no processor alive, then passes once one caught up;
the failure goes to the alert sink like every other check."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import dagster as dg
import pytest
import redis

from assets.definitions import build_definitions
from assets.sensors import alert_failed_checks
from assets.stream import STREAM_JOB, STREAM_LAG_CHECK
from eventlog.events import encode_record, partition_of
from eventlog.redis_streams import RedisEventLog
from onlinestore.redis_layout import redis_key, serialize_entity_key
from streaming.processor import StreamProcessor
from streaming.views import streamed_views

pytestmark = pytest.mark.integration

USERS = (10**12 + 11, 10**12 + 12)


@pytest.fixture
def stream_log(platform):
    settings = platform.settings
    client = redis.Redis.from_url(platform.redis.url)
    log = RedisEventLog(client, settings.feast_project, "transactions", "user_id", settings.stream.partitions, "windows:user_velocity")
    yield log
    keys = client.keys(f"featurestack:{settings.feast_project}:events:*")
    keys += [redis_key(settings.feast_project, serialize_entity_key({"user_id": u}, {"user_id": "int64"})) for u in USERS]
    client.delete(*keys)
    client.close()


def _observe(defs, instance):
    result = defs.resolve_job_def(STREAM_JOB).execute_in_process(instance=instance, raise_on_error=False)
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == STREAM_LAG_CHECK]
    (observation,) = [e.event_specific_data.asset_observation for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    return result, evaluation, observation.metadata


def test_stream_lag_fails_without_a_processor_and_passes_once_it_caught_up(platform, stream_log, caplog):
    defs = build_definitions(platform.settings)
    instance = dg.DagsterInstance.ephemeral()
    # Three events appended in 2020 (explicit entry ids) that no processor has applied.
    for n, user in enumerate((*USERS, USERS[0])):
        record = encode_record({"txn_id": f"lag-{n}", "user_id": user, "merchant_id": 1, "amount": 5.0,
                                "event_timestamp": datetime(2026, 11, 3, tzinfo=timezone.utc)})
        stream_log.client.xadd(stream_log.keys[partition_of(user, stream_log.partitions)], record, id=f"{1_600_000_000_000 + n}-0")
    result, evaluation, metadata = _observe(defs, instance)
    assert not evaluation.passed and "no stream processor is running" in evaluation.description
    assert metadata["events_waiting"].value == 3 and metadata["processors"].value == 0
    assert metadata["lag_seconds"].value > 365 * 86_400
    with caplog.at_level(logging.WARNING, logger="featurestack.alerts"):
        payload = alert_failed_checks(instance, instance.get_run_by_id(result.run_id), webhook_url="")
    assert ("stream/user_velocity", STREAM_LAG_CHECK) in {(f["asset"], f["check"]) for f in payload["failed_checks"]}

    view = streamed_views(platform.settings, platform.redis.url)["user_velocity"]
    processor = StreamProcessor(redis.Redis.from_url(platform.redis.url), platform.settings.feast_project, view.spec, view.layout,
                                platform.settings.stream.partitions)
    deadline = time.monotonic() + 60
    while any(stream_log.lag().values()) and time.monotonic() < deadline:
        processor.step()
    _, evaluation, metadata = _observe(defs, instance)
    assert evaluation.passed, evaluation.description
    assert metadata["events_waiting"].value == 0 and metadata["lag_seconds"].value == 0 and metadata["processors"].value == 1
