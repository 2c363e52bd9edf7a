"""The promotion gate's verdicts and reasons, and the label window's inputs, on hand-made evidence."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from core.artifacts import ModelManifest, TrainingEvidence, ViewPin
from core.model_registry import ModelVersion
from training.labels import LabelWindow
from training.model import calibration_error
from training.promotion import GATE_CHECKS, GatePolicy, evaluate_gate
from training.train import TrainingResult

pytestmark = pytest.mark.unit


def _result(metrics: dict[str, float], champion_auc: float | None = None, coverage: float = 0.9) -> TrainingResult:
    manifest = ModelManifest(
        model="fraud_mlp", version="v", project="p", feature_service="svc", feature_refs=("view:a",), request_features=(),
        user_mean_feature="view:a", n_inputs=1, feature_views={"view": ViewPin(fingerprint="f", join_keys=(), features=())},
        training=TrainingEvidence(training_window={}, rows={}, metrics=metrics, metric_floor={}, trained_on="cpu", epochs=1, seconds=0.0),
    )
    champion = ModelVersion("fraud_mlp", "1", "run1", ("champion",), {}, 0) if champion_auc is not None else None
    return TrainingResult(model_dir=Path("."), manifest=manifest, run_id="run2", experiment_id="1",
                          registered=ModelVersion("fraud_mlp", "2", "run2", ("challenger",), {}, 0), champion=champion,
                          champion_metrics={"test_roc_auc": champion_auc} if champion_auc is not None else {},
                          feature_coverage={"view:a": coverage}, service_tags={}, latency_batch=np.zeros((1, 1), np.float32))


GOOD = {"test_roc_auc": 0.9, "test_calibration_error": 0.01, "test_positives": 40, "test_rows": 1000, "test_matured_rows": 1000}


def test_the_first_version_passes_on_its_own_checks():
    verdict = evaluate_gate(_result(GOOD), GatePolicy(min_test_roc_auc=0.75), latency_ms=1.0)
    assert [check.name for check in verdict.checks] == list(GATE_CHECKS)
    assert verdict.passed and verdict.refusals == []
    assert verdict.checks[-1].reason == "no champion yet: nothing to beat"


def test_a_challenger_must_beat_the_champion_by_the_margin():
    policy = GatePolicy(min_improvement=0.01)
    refused = evaluate_gate(_result(GOOD, champion_auc=0.895), policy, latency_ms=1.0)
    assert refused.refusals == ["beats_champion: holdout ROC AUC 0.9000 vs champion v1 0.8950 on the same rows: "
                                "does not beat it by the margin 0.01"]
    assert evaluate_gate(_result(GOOD, champion_auc=0.89), policy, latency_ms=1.0).passed


def test_every_failing_check_says_why():
    verdict = evaluate_gate(_result({**GOOD, "test_roc_auc": 0.6, "test_calibration_error": 0.2}, coverage=0.3),
                            GatePolicy(min_test_roc_auc=0.75, max_batch_latency_ms=10.0), latency_ms=12.5)
    assert verdict.refusals == [
        "beats_metric_floor: holdout ROC AUC 0.6000 < floor 0.75",
        "calibrated: calibration error 0.2000 > 0.05",
        "feature_coverage: least covered feature view:a: 30.0% of holdout rows < 50%",
        "latency_budget: median 12.50 ms per 512-row call on the serving runner > budget 10.0 ms",
    ]


def test_a_holdout_of_one_class_fails_the_floor_and_cannot_be_compared():
    verdict = evaluate_gate(_result({"test_calibration_error": 0.01, "test_positives": 0, "test_rows": 500, "test_matured_rows": 0},
                                    champion_auc=0.8), GatePolicy(), latency_ms=1.0)
    assert [reason.split(":")[0] for reason in verdict.refusals] == ["enough_labels", "beats_metric_floor", "beats_champion"]
    assert verdict.refusals[0] == ("enough_labels: 0 chargebacks reported by the cutoff in the holdout (0 of 500 rows with a matured "
                                   "label) < 20: too few labels to judge the model yet (chargebacks arrive up to 14 days late)")


def test_policy_from_tags():
    policy = GatePolicy.from_tags("svc", {"min_test_roc_auc": "0.8", "latency_batch_rows": "64", "model": "m"})
    assert policy == replace(GatePolicy(), min_test_roc_auc=0.8, latency_batch_rows=64)
    with pytest.raises(ValueError, match="feature service svc: tag max_calibration_error='low' is not a float"):
        GatePolicy.from_tags("svc", {"max_calibration_error": "low"})


def test_label_window():
    cutoff = datetime(2026, 11, 20, tzinfo=timezone.utc)
    window = LabelWindow.for_service({"label_maturity_days": "7"}, cutoff)
    assert window.maturity == timedelta(days=7)
    assert LabelWindow.from_described(window.describe()) == window
    assert LabelWindow.for_service({}, cutoff).maturity == timedelta(days=14)
    with pytest.raises(ValueError, match="has no time zone"):
        LabelWindow.for_service({}, datetime(2026, 11, 20))
    with pytest.raises(ValueError, match="label_maturity_days='soon' is not a non-negative number"):
        LabelWindow.for_service({"label_maturity_days": "soon"}, cutoff)


def test_calibration_error_is_the_weighted_gap_per_bin():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.05, 0.05, 0.95, 0.45])
    # bins: [0.0, 0.1) holds two rows (mean 0.05, rate 0); 0.4.. one (0.45 vs 1); 0.9.. one (0.95 vs 1)
    assert calibration_error(labels, scores) == pytest.approx((2 * 0.05 + 0.55 + 0.05) / 4)
    assert calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_a_model_is_fitted_and_judged_on_matured_days_when_there_are_enough():
    from datetime import date

    from training.train import modelled_days

    days = np.array([date(2026, 11, d) for d in (1, 1, 2, 3, 3, 4, 5)])
    # Days 1-2 matured, day 3 partly, days 4-5 not: with a one-day holdout, days 1 (fit) and 2 (judge).
    matured = np.array([True, True, True, True, False, False, False])
    assert modelled_days(days, matured, holdout_days=1) == [date(2026, 11, 1), date(2026, 11, 2)]
    # Not enough matured days for a holdout after a fitted day: every day, judged on the labels so far.
    assert modelled_days(days, matured, holdout_days=2) == sorted(set(days))
    assert modelled_days(days, np.zeros(len(days), bool), holdout_days=1) == sorted(set(days))
