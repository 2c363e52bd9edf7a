"""The promotion gate (CI/CD for models): a new version is the `challenger`; it becomes the `champion`
only if it passes every check. The thresholds are the feature service's tags (defaults below):

    min_holdout_positives   the holdout holds at least this many chargebacks reported by the cutoff
                            (fewer, e.g. right after the demo, where no label has matured: no verdict)
    min_test_roc_auc        metric floor: holdout ROC AUC at least this
    max_calibration_error   holdout expected calibration error at most this
    min_feature_coverage    every feature has a value in at least this share of holdout rows
    max_batch_latency_ms    median of one serving-runner call on `latency_batch_rows` rows, at most this
                            (the median: on a shared machine a p99 measures the neighbours)
    min_improvement         holdout ROC AUC at least the champion's (same rows) plus this

The latency is measured on the serving runner by the caller (training must not import serving) and
passed in. Every refusal says which check failed and why.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from core.model_registry import CHALLENGER, ModelRegistry
from training.train import TrainingResult

GATE_CHECKS = ("enough_labels", "beats_metric_floor", "calibrated", "feature_coverage", "latency_budget", "beats_champion")
GATE_TAG = "gate"  # model-version tag: the gate's outcome as JSON
GATE_PASSED_TAG = "gate_passed"  # "true" / "false"


@dataclass(frozen=True)
class GatePolicy:
    min_holdout_positives: int = 20
    min_test_roc_auc: float = 0.5
    max_calibration_error: float = 0.05
    min_feature_coverage: float = 0.5
    max_batch_latency_ms: float = 20.0
    latency_batch_rows: int = 512
    min_improvement: float = 0.005

    @classmethod
    def from_tags(cls, service_name: str, tags: dict[str, str]) -> GatePolicy:
        values = {}
        for name, default in asdict(cls()).items():
            raw = tags.get(name)
            if raw is None:
                continue
            try:
                values[name] = type(default)(raw)
            except ValueError:
                raise ValueError(f"feature service {service_name}: tag {name}={raw!r} is not a {type(default).__name__}") from None
        return cls(**values)


@dataclass(frozen=True)
class GateCheck:
    name: str
    passed: bool
    value: float | None
    threshold: float
    reason: str  # what was found, also when passed


@dataclass(frozen=True)
class GateResult:
    version: str
    checks: tuple[GateCheck, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def refusals(self) -> list[str]:
        return [f"{check.name}: {check.reason}" for check in self.checks if not check.passed]

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "passed": self.passed, "checks": [asdict(c) for c in self.checks]})


def evaluate_gate(result: TrainingResult, policy: GatePolicy, latency_ms: float) -> GateResult:
    """`latency_ms`: the median serving-runner call, measured by the caller (training does not import serving)."""
    metrics = result.manifest.training.metrics
    auc = metrics.get("test_roc_auc")
    ece = metrics.get("test_calibration_error")
    worst_ref, coverage = min(result.feature_coverage.items(), key=lambda item: item[1])
    positives = int(metrics.get("test_positives", 0))
    matured = int(metrics.get("test_matured_rows", 0))
    checks = [
        GateCheck("enough_labels", positives >= policy.min_holdout_positives, positives, policy.min_holdout_positives,
                  f"{positives} chargebacks reported by the cutoff in the holdout "
                  f"({matured:,} of {int(metrics.get('test_rows', 0)):,} rows with a matured label) "
                  + (f">= {policy.min_holdout_positives}" if positives >= policy.min_holdout_positives else
                     f"< {policy.min_holdout_positives}: too few labels to judge the model yet (chargebacks arrive "
                     "up to 14 days late)")),
        GateCheck("beats_metric_floor", auc is not None and auc >= policy.min_test_roc_auc, auc, policy.min_test_roc_auc,
                  "holdout has one class only: no ROC AUC" if auc is None else
                  f"holdout ROC AUC {auc:.4f} {'>=' if auc >= policy.min_test_roc_auc else '<'} floor {policy.min_test_roc_auc}"),
        GateCheck("calibrated", ece is not None and ece <= policy.max_calibration_error, ece, policy.max_calibration_error,
                  "empty holdout" if ece is None else
                  f"calibration error {ece:.4f} {'<=' if ece <= policy.max_calibration_error else '>'} {policy.max_calibration_error}"),
        GateCheck("feature_coverage", coverage >= policy.min_feature_coverage, coverage, policy.min_feature_coverage,
                  f"least covered feature {worst_ref}: {coverage:.1%} of holdout rows "
                  f"{'>=' if coverage >= policy.min_feature_coverage else '<'} {policy.min_feature_coverage:.0%}"),
        GateCheck("latency_budget", latency_ms <= policy.max_batch_latency_ms, latency_ms, policy.max_batch_latency_ms,
                  f"median {latency_ms:.2f} ms per {policy.latency_batch_rows}-row call on the serving runner "
                  f"{'<=' if latency_ms <= policy.max_batch_latency_ms else '>'} budget {policy.max_batch_latency_ms} ms"),
        _beats_champion(result, policy, auc),
    ]
    return GateResult(version=result.registered.version, checks=tuple(checks))


def _beats_champion(result: TrainingResult, policy: GatePolicy, auc: float | None) -> GateCheck:
    if result.champion is None:
        return GateCheck("beats_champion", True, auc, policy.min_improvement, "no champion yet: nothing to beat")
    champion_auc = result.champion_metrics.get("test_roc_auc")
    if auc is None or champion_auc is None:
        return GateCheck("beats_champion", False, auc, policy.min_improvement,
                         f"no ROC AUC to compare on this holdout (challenger {auc}, champion v{result.champion.version} {champion_auc})")
    needed = champion_auc + policy.min_improvement
    return GateCheck("beats_champion", auc >= needed, auc, needed,
                     f"holdout ROC AUC {auc:.4f} vs champion v{result.champion.version} {champion_auc:.4f} on the same rows: "
                     f"{'beats' if auc >= needed else 'does not beat'} it by the margin {policy.min_improvement}")


def record_gate(registry: ModelRegistry, result: TrainingResult, gate: GateResult) -> None:
    registry.set_version_tags(result.registered.name, gate.version,
                              {GATE_TAG: gate.to_json(), GATE_PASSED_TAG: str(gate.passed).lower()})


def recorded_gate(registry: ModelRegistry, name: str, version: str) -> dict | None:
    raw = registry.get(name, version).tags.get(GATE_TAG)
    return json.loads(raw) if raw else None


def promote_version(registry: ModelRegistry, name: str, version: str, note: str) -> None:
    """Make `version` the champion if its recorded gate passed; a ValueError says why not."""
    gate = recorded_gate(registry, name, version)
    if gate is None:
        raise ValueError(f"{name} v{version} has no gate result: only versions trained by `featurestack train` or Dagster can be promoted")
    if not gate["passed"]:
        failed = [f"{c['name']}: {c['reason']}" for c in gate["checks"] if not c["passed"]]
        raise ValueError(f"{name} v{version} failed its gate: " + "; ".join(failed))
    registry.promote(name, version, note)


def rollback(registry: ModelRegistry, name: str) -> tuple[str, str]:
    return registry.rollback(name)


def challenger_version(registry: ModelRegistry, name: str) -> str:
    challenger = registry.by_alias(name, CHALLENGER)
    if challenger is None:
        raise ValueError(f"{name} has no challenger: train one (`featurestack train`) or name a version")
    return challenger.version
