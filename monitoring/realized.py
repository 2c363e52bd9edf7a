"""Realized model performance: the day's logged scores joined with labels once they have matured.

A transaction's label is fraud iff a chargeback for it was reported within LABEL_MATURITY of it; a day
is evaluated only once every transaction of it is that old (before that, late chargebacks would still
turn negatives into positives)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from core.artifacts import ModelManifest
from core.lake import PARTITION_FILES_GLOB
from core.monitoring import ModelDayPerformance, RealizedPerformanceReport
from training.model import average_precision, roc_auc

LABEL_MATURITY = timedelta(days=14)
MARGIN_TAG = "realized_roc_auc_margin"
DEFAULT_MARGIN = 0.05


class LabelsNotMature(ValueError):
    pass


def margin(service_tags: dict[str, str], service: str) -> float:
    """How far realized ROC AUC may fall below the training holdout's (feature service tag realized_roc_auc_margin)."""
    try:
        return float(service_tags.get(MARGIN_TAG, DEFAULT_MARGIN))
    except ValueError as exc:
        raise ValueError(f"feature service {service}: tag {MARGIN_TAG} must be a number: {exc}") from exc


def matured_labels(raw_dir: Path, transactions: pd.DataFrame, as_of: datetime) -> np.ndarray:
    """1 where a chargeback for the transaction (txn_id, event_timestamp) was reported within LABEL_MATURITY
    and by `as_of`, else 0."""
    chargebacks = duckdb.sql(f"""
        SELECT txn_id, min(reported_timestamp) AS reported FROM read_parquet('{raw_dir / "chargebacks" / PARTITION_FILES_GLOB}')
        GROUP BY txn_id""").df().set_index("txn_id")["reported"]
    reported = pd.to_datetime(transactions["txn_id"].map(chargebacks), utc=True)
    within = (reported <= pd.to_datetime(transactions["event_timestamp"], utc=True) + LABEL_MATURITY) & (reported <= as_of)
    return within.to_numpy(dtype=int)


def realized_performance(served: pd.DataFrame, raw_dir: Path, manifest_of: Callable[[str, str], ModelManifest],
                         feature_service: str, day: date, as_of: datetime, allowed_drop: float) -> RealizedPerformanceReport:
    """ROC AUC / PR AUC of each model version (and variant) that scored the day, against matured labels,
    next to the version's training holdout ROC AUC (`manifest_of(model name, version)` as logged)."""
    matures_at = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1) + LABEL_MATURITY
    if as_of < matures_at:
        raise LabelsNotMature(f"labels of {day} mature at {matures_at.isoformat()} ({LABEL_MATURITY.days} days after the day); "
                              f"as of {as_of.isoformat()} they are not")
    scored = served[served["txn_id"].notna()]
    labels = matured_labels(raw_dir, scored, as_of)
    models = []
    for (model_name, version, variant), rows in scored.groupby(["model_name", "model_version", "variant"], sort=True):
        manifest = manifest_of(model_name, version)
        if manifest.training is None:
            raise ValueError(f"model {feature_service}/{version} has no training evidence: no holdout metric to compare with")
        day_labels, scores = labels[scored.index.get_indexer(rows.index)], rows["score"].to_numpy(np.float64)
        models.append(ModelDayPerformance(
            model_version=version, variant=variant, rows=len(rows), positives=int(day_labels.sum()),
            roc_auc=roc_auc(day_labels, scores), pr_auc=average_precision(day_labels, scores),
            holdout_roc_auc=float(manifest.training.metrics["test_roc_auc"]), margin=allowed_drop,
        ))
    return RealizedPerformanceReport(feature_service=feature_service, day=day.isoformat(), labels_as_of=as_of.isoformat(),
                                     models=tuple(models))
