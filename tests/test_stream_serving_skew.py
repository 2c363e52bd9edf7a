"""Training/serving skew on the platform's last day, replayed through the real serving app in event
order: with the stream processor keeping user_velocity fresh, every served vector equals the training
set's point-in-time vector and the served ROC AUC equals the training vectors'; with only the nightly
publish (the platform without the stream) most vectors differ."""

from __future__ import annotations

import pytest
import redis

from featurestack.replay import replay_day
from streaming.views import streamed_views
from validations.online import consistency, offline_latest_sample

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIMIT = 400  # the day's first transactions: enough for users with bursts, small enough for the suite


def test_stream_replay_serves_the_training_vectors_and_online_matches_offline(platform, trained_model):
    settings = platform.settings
    report = replay_day(settings, platform.redis.url, mode="stream")
    assert report.transactions > 1000  # the whole last day
    assert report.mismatched == 0, report.examples
    assert report.served_roc_auc == report.training_vector_roc_auc
    assert report.served_pr_auc == report.training_vector_pr_auc
    # After the stream has run all day, the nightly batch's partition agrees with what it left online.
    layout = streamed_views(settings, platform.redis.url)["user_velocity"].layout
    expected = offline_latest_sample(settings.offline_dir / "user_velocity", ["user_id"], sample=10_000, up_to=report.day)
    result = consistency(redis.Redis.from_url(platform.redis.url), f"{settings.feast_project}_replay", layout, expected)
    assert result.passed and result.compared == expected.num_rows, result.describe()


def test_daily_publish_alone_serves_stale_velocity(platform, trained_model):
    report = replay_day(platform.settings, platform.redis.url, mode="daily", limit=LIMIT)
    assert report.mismatched_by_view["user_velocity"] > LIMIT // 4
    assert report.mismatched_by_view["merchant_risk"] == 0  # a daily snapshot: the nightly publish is as fresh as training
