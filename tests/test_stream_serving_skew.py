"""Training/serving skew on the platform's last day, replayed through the real serving app in event
order: with the stream processor keeping user_velocity fresh, every served vector equals the training
set's point-in-time vector and the served ROC AUC equals the training vectors'; with only the nightly
publish (the platform without the stream) most vectors differ."""

from __future__ import annotations

import pytest

from featurestack.replay import replay_day

pytestmark = pytest.mark.slow

LIMIT = 400  # the day's first transactions: enough for users with bursts, small enough for the suite


def test_stream_replay_serves_the_training_vectors(platform, trained_model):
    report = replay_day(platform.settings, platform.redis.url, mode="stream", limit=LIMIT)
    assert report.transactions == LIMIT
    assert report.mismatched == 0, report.examples
    assert report.served_roc_auc == report.training_vector_roc_auc
    assert report.served_pr_auc == report.training_vector_pr_auc


def test_daily_publish_alone_serves_stale_velocity(platform, trained_model):
    report = replay_day(platform.settings, platform.redis.url, mode="daily", limit=LIMIT)
    assert report.mismatched_by_view["user_velocity"] > LIMIT // 4
    assert report.mismatched_by_view["merchant_risk"] == 0  # a daily snapshot: the nightly publish is as fresh as training
