"""The monitoring computations on hand-made values: bins, PSI, KS, thresholds from tags, the typed
baseline and reports through their files, a day without positives counting as degraded."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from core.monitoring import (
    DriftBaseline, DriftReport, ModelDayPerformance, RealizedPerformanceReport, SkewReport, ViewSkew, latest_reports,
    read_report, report_path, write_report,
)
from monitoring.drift import DEFAULT_KS_THRESHOLD, DEFAULT_PSI_THRESHOLD, feature_drift, ks, psi, thresholds
from monitoring.skew import max_ratio
from training.baseline import bin_fractions, feature_baseline, save_drift_baseline
from training.point_in_time import differing

pytestmark = pytest.mark.unit


def test_bins_put_each_value_in_its_half_open_bin_and_missing_last():
    edges = np.array([1.0, 2.0])
    values = np.array([0.5, 1.0, 1.5, 2.0, 2.5, np.nan, np.nan, 7.0])
    # (-inf, 1] gets 0.5, 1.0; (1, 2] gets 1.5, 2.0; (2, inf) gets 2.5, 7.0; missing: 2.
    assert bin_fractions(edges, values).tolist() == [2 / 8, 2 / 8, 2 / 8, 2 / 8]


def test_psi_matches_its_formula_and_is_zero_for_the_same_shares():
    expected, actual = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    assert psi(expected, expected) == 0.0
    assert psi(expected, actual) == pytest.approx(0.3 * math.log(0.2 / 0.5) * -1 + 0.3 * math.log(0.5 / 0.2))
    # An empty bin on one side is floored, not infinite.
    assert math.isfinite(psi(np.array([1.0, 0.0]), np.array([0.0, 1.0])))


def test_ks_is_scipys_statistic_on_the_present_values():
    reference = np.arange(100, dtype=float)
    values = np.append(np.arange(50, 150, dtype=float), np.nan)
    assert ks(reference, values) == ks_2samp(reference, values[:-1]).statistic == 0.5
    assert ks(reference, np.array([np.nan])) == 0.0


def test_a_shifted_sample_breaches_and_the_same_distribution_does_not():
    rng = np.random.default_rng(3)
    training = rng.lognormal(3.0, 0.5, 5000)
    baseline = feature_baseline("user_velocity:amount_sum_24h", training)
    assert len(baseline.edges) == 9 and sum(baseline.fractions) == pytest.approx(1.0) and len(baseline.sample) == 2000
    same = feature_drift(baseline, rng.lognormal(3.0, 0.5, 2000), "served", 0.25, 0.3)
    shifted = feature_drift(baseline, rng.lognormal(3.0, 0.5, 2000) * 3, "served", 0.25, 0.3)
    assert not same.breached and same.psi < 0.05 and same.ks < 0.05
    assert shifted.breached and shifted.psi > 1 and shifted.ks > 0.5
    assert (shifted.view, shifted.feature, shifted.edges) == ("user_velocity", "amount_sum_24h", baseline.edges)


def test_thresholds_come_from_tags_else_defaults_and_bad_tags_name_the_view():
    assert thresholds({}, "v") == (DEFAULT_PSI_THRESHOLD, DEFAULT_KS_THRESHOLD)
    assert thresholds({"drift_psi_threshold": "0.1", "drift_ks_threshold": "0.2"}, "v") == (0.1, 0.2)
    with pytest.raises(ValueError, match="feature view merchant_risk: tag drift_psi_threshold"):
        thresholds({"drift_psi_threshold": "high"}, "merchant_risk")
    assert max_ratio({"skew_max_ratio": "0.05"}, "v") == 0.05


def test_baseline_and_reports_survive_their_files(tmp_path):
    frame = pd.DataFrame({"v:a": [1.0, 2.0, None, 4.0], "v:b": [0.0, 0.0, 1.0, 1.0]})
    offline = tmp_path / "offline" / "v" / "date=2026-11-03"
    offline.mkdir(parents=True)
    pd.DataFrame({"a": [5.0, 6.0], "b": [1.0, None]}).to_parquet(offline / "part-0.parquet")
    save_drift_baseline(tmp_path, "ver1", "svc", frame, ["v:a", "v:b"], tmp_path / "offline", [date(2026, 11, 3)])
    baseline = DriftBaseline.read(tmp_path)
    assert baseline.feature("v:a").fractions[-1] == 0.25 and baseline.feature("v:b").sample == (0.0, 0.0, 1.0, 1.0)
    assert baseline.feature("v:a", "offline").sample == (5.0, 6.0) and baseline.feature("v:b", "offline").fractions[-1] == 0.5
    with pytest.raises(KeyError, match="no served feature 'v:c'"):
        baseline.feature("v:c")
    with pytest.raises(FileNotFoundError, match=r"no offline partition of v for \['2026-11-04'\]"):
        save_drift_baseline(tmp_path, "ver1", "svc", frame, ["v:a"], tmp_path / "offline", [date(2026, 11, 4)])
    with pytest.raises(FileNotFoundError, match="retrain it"):
        DriftBaseline.read(tmp_path / "elsewhere")

    drift = DriftReport("svc", "ver1", "2026-11-03", (feature_drift(baseline.feature("v:a"), np.array([9.0, 9.0]), "offline", 0.25, 0.3),))
    realized = RealizedPerformanceReport("svc", "2026-11-03", "2026-11-18T00:00:00+00:00",
                                         (ModelDayPerformance("ver1", "champion", 10, 0, float("nan"), float("nan"), 0.9, 0.05),))
    skew = SkewReport("svc", "ver1", "2026-11-03", 10, (ViewSkew("v", 10, 1, 0.01),), ({"txn_id": "t1", "differs": {"v:a": [1.0, None]}},))
    for report, cls in ((drift, DriftReport), (skew, SkewReport)):
        assert read_report(write_report(tmp_path, report), cls) == report
    back = read_report(write_report(tmp_path, realized), RealizedPerformanceReport)
    assert math.isnan(back.models[0].roc_auc) and back.models[0].degraded  # nothing to trust: degraded
    assert drift.breaches == list(drift.features) and skew.views[0].breached and skew.views[0].ratio == 0.1
    write_report(tmp_path, DriftReport("svc", "ver1", "2026-11-02", ()))
    assert latest_reports(tmp_path, DriftReport) == [drift]
    assert report_path(tmp_path, "drift", "svc", "2026-11-03").name == "2026-11-03.json"


def test_differing_treats_missing_on_both_sides_as_equal():
    served = np.array([[1.0, np.nan, np.nan, 2.0]])
    expected = np.array([[1.0, np.nan, 3.0, 2.5]])
    assert differing(served, expected).tolist() == [[False, False, True, True]]


def test_the_planted_amount_shift_moves_only_that_days_amounts(tmp_path):
    import pyarrow.parquet as pq

    from pipelines.generator import AmountShift, generate

    start = date(2026, 11, 1)
    generate(tmp_path / "plain", start, 2, 300, seed=3)
    generate(tmp_path / "shifted", start, 2, 300, seed=3, amount_shift=AmountShift.parse("2026-11-02:10"))
    read = lambda root, day: pq.read_table(root / "transactions" / f"date={day}" / "part-00000.parquet")  # noqa: E731
    assert read(tmp_path / "plain", "2026-11-01").equals(read(tmp_path / "shifted", "2026-11-01"))
    plain, shifted = read(tmp_path / "plain", "2026-11-02"), read(tmp_path / "shifted", "2026-11-02")
    assert plain.drop(["amount"]).equals(shifted.drop(["amount"]))
    ratio = np.array(shifted["amount"]) / np.array(plain["amount"])
    # Amounts are rounded to cents after the shift: tenfold within the rounding of the unshifted cents.
    assert np.all(np.abs(np.array(shifted["amount"]) - 10 * np.array(plain["amount"])) <= 0.05 + 1e-9) and ratio.mean() == pytest.approx(10, rel=1e-3)
    with pytest.raises(ValueError, match="expected YYYY-MM-DD:FACTOR"):
        AmountShift.parse("2026-11-02")
    with pytest.raises(ValueError, match="must be positive"):
        AmountShift(start, 0)
