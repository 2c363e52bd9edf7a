"""Monitoring, shown on a platform of its own (5 generated days, the last one's amounts tripled; the model
is trained on the first 3, its holdout, day 3, is the drift reference):

- drift: the planted day fails feature_drift for the amount features only (served and offline), the
  alert reaches a real webhook, the catalog's feature page shows it, /metrics exports it; an unshifted
  day passes;
- skew: a replay with day-old online features (--mode daily) fails training_serving_skew, a replay
  with the stream (fresh features) passes;
- realized performance: the served model passes once labels matured, a broken model fails.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import date, datetime, time, timedelta, timezone
from types import SimpleNamespace

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from assets.checks import REFERENCE_TIME_TAG
from assets.monitoring import DRIFT_CHECK, REALIZED_CHECK, SKEW_CHECK, drift_key, monitoring_definitions, realized_key, skew_key
from assets.partitions import daily_partitions
from assets.resources import PlatformResource
from assets.sensors import alert_failed_checks
from core.artifacts import ModelManifest
from core.monitoring import DriftReport, RealizedPerformanceReport, SkewReport, read_report, report_path
from monitoring.drift import KS_TAG, PSI_TAG
from monitoring.skew import SAMPLE_ROWS
from monitoring_support import broken_model, write_served_log
from support import delete_project_keys, platform_environment, webhook_receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVICE = "fraud_detection_v1"
DAYS, TRANSACTIONS_PER_DAY = 5, 1500
SHIFT_FACTOR = 10.0
# The features computed from amounts: the only ones the planted shift may move.
AMOUNT_FEATURES = {"user_velocity:amount_sum_1h", "user_velocity:amount_sum_24h", "user_velocity:amount_sum_7d",
                   "user_velocity:amount_mean_7d", "merchant_risk:amount_sum_30d"}


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, redis_url, spark):
    from core.feast_repo import load_repo_contents
    from core.settings import load_settings
    from featurestack.platform_run import run_platform
    from assets.training import gate, promote_challenger
    from pipelines.generator import AmountShift, generate
    from support import untimed_gate_policy
    from training.train import train

    project = f"fs_monitor_{uuid.uuid4().hex[:8]}"
    with platform_environment(tmp_path_factory.mktemp("monitoring"), project, redis_url):
        try:
            settings = load_settings()
            days = [settings.start_date + timedelta(days=offset) for offset in range(DAYS)]
            generate(settings.landing_dir, settings.start_date, DAYS, TRANSACTIONS_PER_DAY, seed=11,
                     amount_shift=AmountShift(days[-1], SHIFT_FACTOR))
            # The model is trained before the later days land (holdout: day 3), as in production.
            outcome = run_platform(settings, only=days[:3])
            assert outcome.failed == [] and outcome.blocked == [], (outcome.failed, outcome.blocked)
            trained = train(outcome.settings, outcome.redis.url, epochs=4)
            verdict = gate(outcome.settings, trained, untimed_gate_policy(trained))
            assert verdict.passed, verdict.refusals
            promote_challenger(outcome.settings, trained.manifest.model, note="tests: monitoring")
            outcome = run_platform(settings, only=days[3:])
            assert outcome.failed == [] and outcome.blocked == [], (outcome.failed, outcome.blocked)
            repo = load_repo_contents(outcome.settings)
            views = {view.name: view for view in repo.feature_views}
            # A platform 5 days old is not stationary: its trailing windows still fill up. Against day 3,
            # user_velocity's txn_count_7d has PSI ~0.1 on day 4 and ~0.38 on day 5, merchant_risk's daily
            # snapshot of 30-day windows up to 6.1 on day 4 (txn_count_30d): real drift, not the planted one.
            # Thresholds come from the views' tags, as an operator would set them for young views.
            views["user_velocity"].tags.update({PSI_TAG: "0.5", KS_TAG: "0.3"})
            views["merchant_risk"].tags.update({PSI_TAG: "20", KS_TAG: "0.8"})
            assets, _, _ = monitoring_definitions(repo.feature_services, list(views.values()), daily_partitions(outcome.settings))
            yield SimpleNamespace(settings=outcome.settings, redis_url=outcome.redis.url, days=days, model=trained,
                                  assets={key: asset for asset in assets for key in asset.keys},
                                  instance=dg.DagsterInstance.ephemeral(), replays={})
        finally:
            delete_project_keys(redis_url, project)
            delete_project_keys(redis_url, f"{project}_replay")


def _replay(monitored, day: date, mode: str, model_dir=None):
    """The day replayed through /predict (cached per day, mode and model)."""
    from featurestack.replay import replay_day

    key = (day, mode, str(model_dir))
    if key not in monitored.replays:
        settings = monitored.settings
        if model_dir is not None:
            settings = replace(settings, serving=replace(settings.serving, model_dir=str(model_dir)))
        monitored.replays[key] = replay_day(settings, monitored.redis_url, day, mode)
    return monitored.replays[key]


def _serve(monitored, day: date, mode: str, model_dir=None) -> None:
    """The served-feature log of `day` as the replay's serving answered it."""
    model_dir = model_dir or monitored.model.model_dir
    write_served_log(monitored.settings, ModelManifest.read(model_dir), _replay(monitored, day, mode, model_dir))


def _materialize(monitored, key: dg.AssetKey, day: date, reference_time: datetime | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [monitored.assets[key]], partition_key=day.isoformat(), instance=monitored.instance,
        resources={"platform": PlatformResource.from_settings(monitored.settings)},
        tags={REFERENCE_TIME_TAG: reference_time.isoformat()} if reference_time else None, raise_on_error=False,
    )


def _check(result: dg.ExecuteInProcessResult, name: str):
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def test_planted_drift_fails_for_the_shifted_features_only_alerts_and_shows_in_the_catalog(monitored):
    from catalog.render import Links, render_feature
    from catalog.snapshot import build_snapshot
    from catalog.web import CatalogState, create_app

    unshifted, shifted = monitored.days[3], monitored.days[4]
    _serve(monitored, unshifted, "stream")
    calm = _materialize(monitored, drift_key(SERVICE), unshifted)
    calm_report = read_report(report_path(monitored.settings.state_dir, "drift", SERVICE, unshifted.isoformat()), DriftReport)
    print("unshifted", [(d.source, d.view, d.feature, round(d.psi, 3), round(d.ks, 3)) for d in calm_report.features])
    assert calm.success and _check(calm, DRIFT_CHECK).passed, _check(calm, DRIFT_CHECK).description
    assert {d.source for d in calm_report.features} == {"served", "offline"} and calm_report.missing_sources == ()

    _serve(monitored, shifted, "stream")
    drifted = _materialize(monitored, drift_key(SERVICE), shifted)
    report = read_report(report_path(monitored.settings.state_dir, "drift", SERVICE, shifted.isoformat()), DriftReport)
    print("shifted", [(d.source, d.view, d.feature, round(d.psi, 3), round(d.ks, 3)) for d in report.features])
    evaluation = _check(drifted, DRIFT_CHECK)
    assert drifted.success and not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    breached = {f"{d.view}:{d.feature}" for d in report.breaches}
    print("breached", sorted((d.source, d.view, d.feature) for d in report.breaches))
    # Only features computed from amounts (the 7-day mean moves less: most of its week is unshifted).
    assert breached <= AMOUNT_FEATURES
    assert sorted((d.source, d.feature) for d in report.breaches) == [
        ("offline", "amount_mean_7d"), ("offline", "amount_sum_1h"), ("offline", "amount_sum_24h"), ("offline", "amount_sum_7d"),
        ("served", "amount_sum_1h"), ("served", "amount_sum_24h"), ("served", "amount_sum_7d")]
    assert evaluation.metadata["breached"].data == sorted(breached)

    with webhook_receiver() as (url, received):
        payload = alert_failed_checks(monitored.instance, monitored.instance.get_run_by_id(drifted.run_id), webhook_url=url)
    assert received == [json.loads(json.dumps(payload, default=str))] and received[0]["partition"] == shifted.isoformat()
    assert [(f["asset"], f["check"], f["severity"]) for f in received[0]["failed_checks"]] == [
        (drift_key(SERVICE).to_user_string(), DRIFT_CHECK, "WARN")]
    assert "served user_velocity:amount_sum_24h PSI" in received[0]["text"]

    snapshot = build_snapshot(monitored.settings, instance=None)
    page = render_feature(snapshot, "user_velocity", "amount_sum_24h", Links())
    assert 'data-badge="drift"' in page and "drift: failing" in page and page.count('class="drift-plot"') == 2
    calm_page = render_feature(snapshot, "user_velocity", "txn_count_1h", Links())
    assert "drift: passing" in calm_page and "drift: failing" not in calm_page

    metrics = TestClient(create_app(CatalogState(snapshot))).get("/metrics").text
    amount = next(d for d in report.features if (d.source, d.feature) == ("served", "amount_sum_24h"))
    line = (f'featurestack_feature_drift_psi{{feature="amount_sum_24h",feature_service="{SERVICE}",source="served",'
            f'view="user_velocity"}} {amount.psi!r}')
    assert line in metrics.splitlines(), metrics[:2000]


def test_skew_fails_on_day_old_online_features_and_passes_on_fresh_ones(monitored):
    day = monitored.days[2]
    _serve(monitored, day, "daily")
    stale = _materialize(monitored, skew_key(SERVICE), day)
    stale_report = read_report(report_path(monitored.settings.state_dir, "skew", SERVICE, day.isoformat()), SkewReport)
    by_view = {v.view: v for v in stale_report.views}
    print("daily", by_view)
    assert stale.success and not _check(stale, SKEW_CHECK).passed
    assert by_view["user_velocity"].breached and by_view["user_velocity"].ratio > 0.5
    assert _check(stale, SKEW_CHECK).metadata["breached_views"].data == [v.view for v in stale_report.views if v.breached]

    _serve(monitored, day, "stream")
    fresh = _materialize(monitored, skew_key(SERVICE), day)
    fresh_report = read_report(report_path(monitored.settings.state_dir, "skew", SERVICE, day.isoformat()), SkewReport)
    assert fresh.success and _check(fresh, SKEW_CHECK).passed, _check(fresh, SKEW_CHECK).description
    assert [(v.view, v.differing) for v in fresh_report.views] == [(v.view, 0) for v in fresh_report.views]
    assert fresh_report.views[0].compared == SAMPLE_ROWS


def test_realized_performance_waits_for_labels_passes_and_fails_on_a_broken_model(monitored):
    day = monitored.days[2]  # the holdout day: served with fresh features, the realized metric is the holdout's
    matured = datetime.combine(day, time(), tzinfo=timezone.utc) + timedelta(days=15)
    _serve(monitored, day, "stream")
    early = _materialize(monitored, realized_key(SERVICE), day, reference_time=matured - timedelta(hours=1))
    assert not early.success
    assert "LabelsNotMature" in early.get_step_failure_events()[0].event_specific_data.error.to_string()

    served = _materialize(monitored, realized_key(SERVICE), day, reference_time=matured)
    report = read_report(report_path(monitored.settings.state_dir, "realized_performance", SERVICE, day.isoformat()),
                         RealizedPerformanceReport)
    (model,) = report.models
    print("realized", model)
    assert served.success and _check(served, REALIZED_CHECK).passed
    assert (model.model_version, model.rows) == (monitored.model.manifest.version, TRANSACTIONS_PER_DAY)
    assert model.holdout_roc_auc == monitored.model.manifest.training.metrics["test_roc_auc"]
    assert model.roc_auc == pytest.approx(model.holdout_roc_auc, abs=1e-9), model

    broken = broken_model(monitored.settings.models_dir, monitored.model.model_dir)
    _serve(monitored, day, "daily", model_dir=broken)
    degraded = _materialize(monitored, realized_key(SERVICE), day, reference_time=matured)
    report = read_report(report_path(monitored.settings.state_dir, "realized_performance", SERVICE, day.isoformat()),
                         RealizedPerformanceReport)
    (model,) = report.models
    print("broken", model)
    evaluation = _check(degraded, REALIZED_CHECK)
    assert degraded.success and not evaluation.passed and model.model_version == "broken"
    assert model.roc_auc < model.holdout_roc_auc - model.margin
    assert evaluation.metadata["degraded_versions"].data == ["broken"]
