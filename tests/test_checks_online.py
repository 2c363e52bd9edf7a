"""Online/offline consistency, freshness (online `_ts`, offline partitions) and the alert sink, on the
platform the session fixture ran (3 days, real Spark, Dagster, Redis)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
import redis

from assets.checks import CONSISTENCY_CHECK, ONLINE_FRESHNESS_CHECK, REFERENCE_TIME_TAG, view_layout
from assets.definitions import DAILY_JOB, build_definitions
from assets.freshness import FRESHNESS_JOB
from assets.sensors import alert_failed_checks
from core.feast_repo import load_repo_contents
from onlinestore.redis_layout import encode_value, feature_field, redis_key, serialize_entity_key
from support import webhook_receiver
from validations.online import consistency, offline_latest_sample

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def defs(platform):
    return build_definitions(platform.settings)


@pytest.fixture(scope="module")
def instance(platform):
    return dg.DagsterInstance.from_config(str(platform.settings.dagster_home))  # the platform's persistent instance


def _layout(settings, name):
    repo = load_repo_contents(settings)
    return view_layout(next(v for v in repo.feature_views if v.name == name), repo.entities)


def test_every_daily_run_checked_consistency_with_zero_mismatches(platform, instance):
    for view in ("user_velocity", "merchant_risk"):
        key = dg.AssetCheckKey(dg.AssetKey(["online", view]), CONSISTENCY_CHECK)
        records = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
        evaluations = [r.event.dagster_event.event_specific_data for r in records if r.event and r.event.dagster_event]
        assert len(evaluations) >= len(platform.days)
        assert all(e.passed and e.metadata["mismatch_rate"].value == 0.0 for e in evaluations)


def test_consistency_catches_a_corrupted_redis_value(platform, defs, instance):
    settings = platform.settings
    layout = _layout(settings, "user_velocity")
    expected = offline_latest_sample(settings.offline_dir / "user_velocity", ["user_id"], 50)
    client = redis.Redis.from_url(platform.redis.url)
    try:
        assert consistency(client, settings.feast_project, layout, expected).mismatch_rate == 0.0
        victim = expected.to_pylist()[0]
        key = redis_key(settings.feast_project, serialize_entity_key({"user_id": victim["user_id"]}, {"user_id": "int64"}))
        field = feature_field("user_velocity", "txn_count_24h")
        good = client.hget(key, field)
        client.hset(key, field, encode_value(victim["txn_count_24h"] + 1000, "int64"))
        try:
            outcome = consistency(client, settings.feast_project, layout, expected)
            assert outcome.mismatched_entities == 1 and outcome.mismatch_rate == pytest.approx(1 / 50)
            assert outcome.mismatches == [{"entity": {"user_id": victim["user_id"]}, "feature": "txn_count_24h",
                                           "online": victim["txn_count_24h"] + 1000, "offline": victim["txn_count_24h"]}]
            # The same through Dagster: the check of the last partition fails, naming the rate.
            job = defs.resolve_job_def(DAILY_JOB).get_subset(
                asset_check_selection={dg.AssetCheckKey(dg.AssetKey(["online", "user_velocity"]), CONSISTENCY_CHECK)}
            )
            result = job.execute_in_process(instance=instance, partition_key=platform.days[-1].isoformat(), raise_on_error=False)
            (evaluation,) = result.get_asset_check_evaluations()
            assert not evaluation.passed and "mismatch rate" in evaluation.description
        finally:
            client.hset(key, field, good)
    finally:
        client.close()


def _freshness(defs, instance, reference: datetime | None, **kwargs):
    tags = {REFERENCE_TIME_TAG: reference.isoformat()} if reference else {}
    return defs.resolve_job_def(FRESHNESS_JOB).execute_in_process(instance=instance, tags=tags, raise_on_error=False, **kwargs)


def _by_key(result):
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def test_online_freshness_passes_within_the_sla_and_fails_past_it(platform, defs, instance):
    last_day_end = datetime.combine(platform.days[-1] + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    fresh = _by_key(_freshness(defs, instance, last_day_end + timedelta(hours=1)))
    stale = _by_key(_freshness(defs, instance, last_day_end + timedelta(days=5)))
    for view, sla in (("user_velocity", 36), ("merchant_risk", 48)):
        name = f"online/{view}:{ONLINE_FRESHNESS_CHECK}"
        assert fresh[name].passed, fresh[name].description
        assert not stale[name].passed
        assert f"OLDER than the SLA of {sla} h" in stale[name].description
        assert stale[name].metadata["age_hours"].value > sla


def test_offline_partition_freshness_fails_when_the_latest_partition_is_missing(platform, defs, instance):
    from dagster._core.test_utils import freeze_time

    # Today (real time) the partitions of the last days were never computed: stale.
    stale = _by_key(_freshness(defs, instance, None))
    assert not stale["features/user_velocity:freshness_check"].passed
    # The morning after the last generated day, the partitions are there: fresh.
    morning_after = datetime.combine(platform.days[-1] + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=13)
    with freeze_time(morning_after):
        fresh = _by_key(_freshness(defs, instance, morning_after))
    assert fresh["features/user_velocity:freshness_check"].passed
    assert fresh["features/merchant_risk:freshness_check"].passed


def test_freshness_policies_come_from_the_feast_sla_tags_on_the_checks_deadline(defs):
    graph = defs.resolve_asset_graph()
    user_velocity = graph.get(dg.AssetKey(["features", "user_velocity"])).freshness_policy
    merchant_risk = graph.get(dg.AssetKey(["online", "merchant_risk"])).freshness_policy
    # SLA 36 h: the day's partition is due 12:00 UTC the next day; SLA 48 h: 23:00 (clamped).
    assert (user_velocity.deadline_cron, user_velocity.timezone) == ("0 12 * * *", "UTC")
    assert merchant_risk.deadline_cron == "0 23 * * *"
    assert user_velocity.lower_bound_delta == timedelta(days=1)
    # The partition freshness checks run on the very same deadlines, so policy and checks agree.
    check_deadlines = {
        spec.asset_key.path[1]: spec.metadata["dagster/freshness_params"].data["deadline_cron"]
        for check in defs.asset_checks for spec in check.check_specs if spec.name == "freshness_check"
    }
    assert check_deadlines == {"user_velocity": user_velocity.deadline_cron, "merchant_risk": merchant_risk.deadline_cron}


def test_failed_checks_go_to_the_webhook_or_the_log(platform, defs, instance, caplog):
    with webhook_receiver() as (url, received):
        stale = datetime.combine(platform.days[-1], datetime.min.time(), tzinfo=timezone.utc) + timedelta(days=30)
        result = _freshness(defs, instance, stale)
        run = instance.get_run_by_id(result.run_id)
        payload = alert_failed_checks(instance, run, webhook_url=url)
    assert received == [json.loads(json.dumps(payload, default=str))]
    failed = {(f["asset"], f["check"]) for f in received[0]["failed_checks"]}
    assert ("online/user_velocity", ONLINE_FRESHNESS_CHECK) in failed and "OLDER than the SLA" in received[0]["text"]
    with caplog.at_level(logging.WARNING, logger="featurestack.alerts"):
        alert_failed_checks(instance, run, webhook_url="")
    assert "FEATURESTACK_ALERT_WEBHOOK_URL unset" in caplog.text
