"""Typed monitoring artifacts, shared by their writers and readers.

  DriftBaseline   `<model dir>/drift_baseline.json`: per feature, the bins and a reference sample of the
                  values the model was fit on. Training writes it (training/baseline.py); the drift
                  monitor reads it.
  DriftReport, RealizedPerformanceReport, SkewReport
                  `<state>/monitoring/<kind>/<feature service>/<day>.json`: one day's results. The
                  Dagster monitoring assets write them; the catalog (feature pages, /metrics gauges)
                  reads the latest of each.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

BASELINE_FILE = "drift_baseline.json"
MONITORING_DIR = "monitoring"


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    """Atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".json.tmp")
    staging.write_text(json.dumps(data, indent=1, allow_nan=True))
    staging.replace(path)
    return path


@dataclass(frozen=True)
class FeatureBaseline:
    """One feature in the model's reference window, as one source holds it: quantile bin edges (bins are
    (-inf, e0], (e0, e1], ..., (e_last, inf), then one bin for missing values), the share of rows in each
    bin, and a seeded sample of the non-missing values (the KS reference).

    source `served`: the training set's point-in-time values (what serving reads, as of just before each
    transaction); `offline`: the view's offline rows (e.g. windows that include their own event, one
    merchant snapshot a day), so each day's offline partition is compared with rows of its own kind."""

    ref: str  # view:feature
    source: str  # served | offline
    edges: tuple[float, ...]
    fractions: tuple[float, ...]  # len(edges) + 2: the value bins, then missing
    sample: tuple[float, ...]
    rows: int


@dataclass(frozen=True)
class DriftBaseline:
    model_version: str
    feature_service: str
    features: tuple[FeatureBaseline, ...]

    def feature(self, ref: str, source: str = "served") -> FeatureBaseline:
        for baseline in self.features:
            if (baseline.ref, baseline.source) == (ref, source):
                return baseline
        raise KeyError(f"drift baseline of {self.feature_service}/{self.model_version} has no {source} feature {ref!r}")

    def write(self, model_dir: Path) -> Path:
        return _write_json(model_dir / BASELINE_FILE, dataclasses.asdict(self))

    @classmethod
    def read(cls, model_dir: Path) -> DriftBaseline:
        path = model_dir / BASELINE_FILE
        try:
            data = json.loads(path.read_text())
            return cls(model_version=data["model_version"], feature_service=data["feature_service"], features=tuple(
                FeatureBaseline(ref=f["ref"], source=f["source"], edges=tuple(f["edges"]), fractions=tuple(f["fractions"]),
                                sample=tuple(f["sample"]), rows=f["rows"])
                for f in data["features"]))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{path}: no drift baseline (the model was trained before baselines were saved: retrain it)") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: unreadable drift baseline: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class FeatureDrift:
    source: str  # served | offline
    view: str
    feature: str
    rows: int
    psi: float
    ks: float
    psi_threshold: float
    ks_threshold: float
    edges: tuple[float, ...]  # the baseline's bin edges
    baseline_fractions: tuple[float, ...]  # the training share per bin (value bins, then missing)
    fractions: tuple[float, ...]  # the day's share per bin

    @property
    def breached(self) -> bool:
        return self.psi > self.psi_threshold or self.ks > self.ks_threshold


@dataclass(frozen=True)
class DriftReport:
    kind = "drift"
    feature_service: str
    model_version: str
    day: str
    features: tuple[FeatureDrift, ...]
    missing_sources: tuple[str, ...] = ()  # e.g. "served": no served-feature log for the day

    @property
    def breaches(self) -> list[FeatureDrift]:
        return [drift for drift in self.features if drift.breached]


@dataclass(frozen=True)
class ModelDayPerformance:
    model_version: str
    variant: str
    rows: int
    positives: int
    roc_auc: float  # NaN when the day has no positive or no negative
    pr_auc: float
    holdout_roc_auc: float
    margin: float

    @property
    def degraded(self) -> bool:
        return not self.roc_auc >= self.holdout_roc_auc - self.margin  # NaN counts as degraded: nothing to trust


@dataclass(frozen=True)
class RealizedPerformanceReport:
    kind = "realized_performance"
    feature_service: str
    day: str
    labels_as_of: str
    models: tuple[ModelDayPerformance, ...]


@dataclass(frozen=True)
class ViewSkew:
    view: str
    compared: int
    differing: int
    threshold: float

    @property
    def ratio(self) -> float:
        return self.differing / self.compared if self.compared else 0.0

    @property
    def breached(self) -> bool:
        return self.ratio > self.threshold


@dataclass(frozen=True)
class SkewReport:
    kind = "skew"
    feature_service: str
    model_version: str
    day: str
    served_rows: int
    views: tuple[ViewSkew, ...]
    examples: tuple[dict, ...] = ()


Report = TypeVar("Report", DriftReport, RealizedPerformanceReport, SkewReport)
_NESTED = {DriftReport: ("features", FeatureDrift), RealizedPerformanceReport: ("models", ModelDayPerformance),
           SkewReport: ("views", ViewSkew)}


def report_path(state_dir: Path, kind: str, feature_service: str, day: str) -> Path:
    return state_dir / MONITORING_DIR / kind / feature_service / f"{day}.json"


def write_report(state_dir: Path, report: DriftReport | RealizedPerformanceReport | SkewReport) -> Path:
    return _write_json(report_path(state_dir, report.kind, report.feature_service, report.day), dataclasses.asdict(report))


def _from_json(cls: type[Report], data: dict[str, Any], where: Path) -> Report:
    field, item_cls = _NESTED[cls]
    try:
        items = tuple(item_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in item.items()}) for item in data[field])
        return cls(**{**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}, field: items})
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{where}: unreadable {cls.kind} report: {type(exc).__name__}: {exc}") from exc


def read_report(path: Path, cls: type[Report]) -> Report:
    return _from_json(cls, json.loads(path.read_text()), path)


def latest_reports(state_dir: Path, cls: type[Report]) -> list[Report]:
    """The newest day's report of each feature service (none: an empty list)."""
    reports = []
    for service_dir in sorted((state_dir / MONITORING_DIR / cls.kind).glob("*")):
        days = sorted(service_dir.glob("*.json"))
        if days:
            reports.append(read_report(days[-1], cls))
    return reports


def reports(state_dir: Path, cls: type[Report], feature_service: str) -> list[Report]:
    """Every day's report of a feature service, oldest first."""
    return [read_report(path, cls) for path in sorted((state_dir / MONITORING_DIR / cls.kind / feature_service).glob("*.json"))]
