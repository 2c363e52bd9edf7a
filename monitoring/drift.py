"""Feature drift of one day against the model's training baseline: PSI over the baseline's bins and the
two-sample KS statistic against its reference sample, for the served values (the served-feature log) and
for the offline store's partition of the day."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from core.monitoring import DriftBaseline, DriftReport, FeatureBaseline, FeatureDrift
from core.served_log import feature_column
from training.baseline import bin_fractions, offline_rows

PSI_TAG, KS_TAG = "drift_psi_threshold", "drift_ks_threshold"
DEFAULT_PSI_THRESHOLD = 0.25  # the usual reading of PSI: above 0.25 the population has shifted
DEFAULT_KS_THRESHOLD = 0.3
PSI_FLOOR = 1e-4  # an empty bin on one side would make PSI infinite


def thresholds(view_tags: dict[str, str], view: str) -> tuple[float, float]:
    """(PSI, KS) thresholds of a view: its tags drift_psi_threshold / drift_ks_threshold, else the defaults."""
    try:
        return float(view_tags.get(PSI_TAG, DEFAULT_PSI_THRESHOLD)), float(view_tags.get(KS_TAG, DEFAULT_KS_THRESHOLD))
    except ValueError as exc:
        raise ValueError(f"feature view {view}: tag {PSI_TAG} / {KS_TAG} must be a number: {exc}") from exc


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two bin-share vectors: sum of (actual - expected) * ln(actual / expected)."""
    expected, actual = np.clip(expected, PSI_FLOOR, None), np.clip(actual, PSI_FLOOR, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks(reference: np.ndarray, values: np.ndarray) -> float:
    """KS statistic of the non-missing values against the reference sample (0 when either side is empty)."""
    values = values[~np.isnan(values)]
    if len(values) == 0 or len(reference) == 0:
        return 0.0
    return float(ks_2samp(reference, values).statistic)


def feature_drift(baseline: FeatureBaseline, values: np.ndarray, source: str, psi_threshold: float, ks_threshold: float) -> FeatureDrift:
    view, _, feature = baseline.ref.partition(":")
    fractions = bin_fractions(np.array(baseline.edges), values)
    return FeatureDrift(
        source=source, view=view, feature=feature, rows=len(values),
        psi=psi(np.array(baseline.fractions), fractions), ks=ks(np.array(baseline.sample), values),
        psi_threshold=psi_threshold, ks_threshold=ks_threshold, edges=baseline.edges, baseline_fractions=baseline.fractions,
        fractions=tuple(map(float, fractions)),
    )


def drift_of_day(baseline: DriftBaseline, view_tags: dict[str, dict[str, str]], day: date, served: pd.DataFrame | None,
                 offline_dir: Path) -> DriftReport:
    """Every baseline feature, for each source the day has: `served` (the day's served-feature log, answered
    rows) and `offline` (the view's partition of the day)."""
    by_view: dict[str, list[FeatureBaseline]] = {}
    for feature in baseline.features:
        if feature.source == "served":
            by_view.setdefault(feature.ref.split(":", 1)[0], []).append(feature)
    results, missing = [], []
    if served is None:
        missing.append("served")
    else:
        served = served[served["answered"]]
    for view, features in by_view.items():
        psi_threshold, ks_threshold = thresholds(view_tags.get(view, {}), view)
        if served is not None:
            results += [feature_drift(f, served[feature_column(f.ref)].to_numpy(np.float64, na_value=np.nan), "served",
                                      psi_threshold, ks_threshold) for f in features]
        try:
            offline = offline_rows(offline_dir, view, [day], [f.ref.split(":", 1)[1] for f in features])
        except FileNotFoundError:
            missing.append(f"offline:{view}")
            continue
        results += [feature_drift(baseline.feature(f.ref, "offline"), offline[f.ref.split(":", 1)[1]].to_numpy(np.float64, na_value=np.nan),
                                  "offline", psi_threshold, ks_threshold) for f in features]
    return DriftReport(feature_service=baseline.feature_service, model_version=baseline.model_version, day=day.isoformat(),
                       features=tuple(results), missing_sources=tuple(missing))
