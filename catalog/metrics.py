"""The monitoring gauges in Prometheus' text format, from the snapshot's latest monitoring reports (the
catalog server's /metrics: Prometheus scrapes it; the reports come from the Dagster monitoring assets)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

DRIFT_LABELS = ["feature_service", "view", "feature", "source"]
MODEL_LABELS = ["feature_service", "model_version", "variant"]
SKEW_LABELS = ["feature_service", "view"]


def _gauges(monitoring: dict[str, list[dict[str, Any]]]) -> list[GaugeMetricFamily]:
    drift = {name: GaugeMetricFamily(f"featurestack_feature_drift_{name}", help_text, labels=DRIFT_LABELS) for name, help_text in (
        ("psi", "PSI of the day's values against the model's training baseline"),
        ("ks", "KS statistic of the day's values against the training reference sample"),
        ("psi_threshold", "The view's PSI threshold (tag drift_psi_threshold)"),
        ("ks_threshold", "The view's KS threshold (tag drift_ks_threshold)"))}
    for report in monitoring.get("drift", []):
        for d in report["features"]:
            labels = [report["feature_service"], d["view"], d["feature"], d["source"]]
            for name in drift:
                drift[name].add_metric(labels, d[name])
    realized = {name: GaugeMetricFamily(f"featurestack_{name}", help_text, labels=MODEL_LABELS) for name, help_text in (
        ("realized_roc_auc", "ROC AUC of the latest evaluated day's scores against matured labels"),
        ("realized_pr_auc", "PR AUC (average precision) of the latest evaluated day against matured labels"),
        ("holdout_roc_auc", "The model version's ROC AUC on its training holdout"),
        ("realized_roc_auc_margin", "How far realized ROC AUC may fall below the holdout's (tag realized_roc_auc_margin)"))}
    sources = {"realized_roc_auc": "roc_auc", "realized_pr_auc": "pr_auc", "holdout_roc_auc": "holdout_roc_auc",
               "realized_roc_auc_margin": "margin"}
    for report in monitoring.get("realized_performance", []):
        for model in report["models"]:
            labels = [report["feature_service"], model["model_version"], model["variant"]]
            for name, gauge in realized.items():
                value = model[sources[name]]
                gauge.add_metric(labels, float("nan") if value is None else value)
    skew = {name: GaugeMetricFamily(f"featurestack_training_serving_skew_{name}", help_text, labels=SKEW_LABELS) for name, help_text in (
        ("ratio", "Share of sampled served rows whose view's features differ from the point-in-time vector"),
        ("max_ratio", "The view's tolerated share (tag skew_max_ratio)"))}
    for report in monitoring.get("skew", []):
        for view in report["views"]:
            labels = [report["feature_service"], view["view"]]
            skew["ratio"].add_metric(labels, view["differing"] / view["compared"] if view["compared"] else 0.0)
            skew["max_ratio"].add_metric(labels, view["threshold"])
    return [*drift.values(), *realized.values(), *skew.values()]


class _Snapshot:
    def __init__(self, monitoring: dict[str, list[dict[str, Any]]]):
        self.monitoring = monitoring

    def collect(self):
        return _gauges(self.monitoring)


def monitoring_metrics(snapshot: dict[str, Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(snapshot.get("monitoring") or {}))
    return generate_latest(registry)
