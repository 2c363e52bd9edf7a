"""`featurestack train`: a point-in-time correct training set through the Feast SDK, a torch model
evaluated on a time-based holdout, and a manifest that pins exactly what it was trained on."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import torch
from torch import nn

from core.artifacts import ModelManifest, TrainingEvidence, ViewPin, artifact_dir, promote
from core.feast_repo import open_store
from core.settings import Settings
from onlinestore.redis_layout import layout_from_feature_view
from training.baseline import save_drift_baseline
from training.model import (
    REQUEST_FEATURES, WEIGHTS_FILE, FraudMLP, average_precision, model_inputs, pick_device, roc_auc, save_numpy_weights,
)

USER_MEAN_FEATURE = "user_velocity:amount_mean_7d"
MODEL_FILE = "model.pt"


@dataclass(frozen=True)
class TrainingResult:
    model_dir: Path
    manifest: ModelManifest

    @property
    def promoted(self) -> bool:
        return self.manifest.training.promoted


def metric_floor(service) -> float:
    """The minimum test ROC AUC a model of this feature service must reach (tag `min_test_roc_auc`)."""
    return float(service.tags.get("min_test_roc_auc", "0.5"))


def labelled_transactions(settings: Settings) -> pd.DataFrame:
    """Every raw transaction with its label (fraud iff a chargeback arrived) as entity rows.

    The entity timestamp is one microsecond before the transaction: the features are then the state
    just before it, exactly what serving reads from Redis when the transaction comes in."""
    return duckdb.sql(f"""
        SELECT t.txn_id, t.user_id, t.merchant_id, t.amount,
               t.event_timestamp - INTERVAL 1 MICROSECOND AS event_timestamp,
               (c.txn_id IS NOT NULL)::INTEGER AS is_fraud
        FROM read_parquet('{settings.raw_dir / "transactions"}/*/*.parquet') t
        LEFT JOIN (SELECT DISTINCT txn_id FROM read_parquet('{settings.raw_dir / "chargebacks"}/*/*.parquet')) c USING (txn_id)
        ORDER BY t.event_timestamp, t.txn_id
    """).df()


def view_fingerprint(view) -> str:
    """Changes whenever the view's definition (schema, source, ttl, ...) changes."""
    return hashlib.sha256(view.to_proto().spec.SerializeToString(deterministic=True)).hexdigest()[:16]


def training_set(store, service, entities: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    refs = [f"{projection.name_to_use()}:{field.name}" for projection in service.feature_view_projections for field in projection.features]
    frame = store.get_historical_features(entity_df=entities, features=service, full_feature_names=True).to_df()
    frame = frame.sort_values(["event_timestamp", "txn_id"]).reset_index(drop=True)
    return frame.rename(columns={ref.replace(":", "__"): ref for ref in refs}), refs


def _inputs(frame: pd.DataFrame, refs: list[str], views: list[str]) -> np.ndarray:
    values = frame[refs].to_numpy(dtype=np.float64, na_value=np.nan)
    missing = np.column_stack([frame[[r for r in refs if r.startswith(f"{view}:")]].isna().all(axis=1) for view in views])
    return model_inputs(values, missing, frame["amount"].to_numpy(np.float64), refs.index(USER_MEAN_FEATURE))


def _fit(inputs: np.ndarray, labels: np.ndarray, epochs: int, device: torch.device, seed: int) -> FraudMLP:
    torch.manual_seed(seed)
    model = FraudMLP(inputs.shape[1]).to(device)
    x = torch.from_numpy(inputs).to(device)
    y = torch.from_numpy(labels.astype(np.float32)).to(device)
    model.fit_scaler(x)
    positives = max(float(labels.sum()), 1.0)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(labels) - positives) / positives, device=device))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(512):
            batch = batch.to(device)
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def _scores(model: FraudMLP, inputs: np.ndarray, device: torch.device) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(inputs).to(device))).cpu().numpy()


def build_training_set(settings: Settings, redis_url: str, feature_service: str) -> pd.DataFrame:
    """Labelled transactions with the feature service's features, point-in-time correct."""
    store = open_store(settings, redis_url)
    frame, _refs = training_set(store, store.get_feature_service(feature_service), labelled_transactions(settings))
    return frame


def train(settings: Settings, redis_url: str, feature_service: str = "fraud_detection_v1", epochs: int = 10,
          holdout_days: int = 1, seed: int = 0, frame: pd.DataFrame | None = None) -> TrainingResult:
    """Fit on earlier days, evaluate on the last `holdout_days`, save model + manifest, and promote the
    model (the LATEST pointer serving reads) only if it reaches the service's metric floor."""
    started = time.perf_counter()
    store = open_store(settings, redis_url)
    service = store.get_feature_service(feature_service)
    refs = [f"{projection.name_to_use()}:{field.name}" for projection in service.feature_view_projections for field in projection.features]
    if frame is None:
        frame, refs = training_set(store, service, labelled_transactions(settings))
    views = list(dict.fromkeys(ref.split(":")[0] for ref in refs))
    days = sorted(frame["event_timestamp"].dt.date.unique())
    if len(days) <= holdout_days:
        raise ValueError(f"need more than {holdout_days} day(s) of labelled transactions for a time-based holdout, found {len(days)}")
    is_test = (frame["event_timestamp"].dt.date >= days[-holdout_days]).to_numpy()
    inputs, labels = _inputs(frame, refs, views), frame["is_fraud"].to_numpy()
    device = pick_device()
    model = _fit(inputs[~is_test], labels[~is_test], epochs, device, seed)
    test_scores = _scores(model, inputs[is_test], device)
    metrics = {
        "test_roc_auc": roc_auc(labels[is_test], test_scores),
        "test_pr_auc": average_precision(labels[is_test], test_scores),
        "test_base_rate": float(labels[is_test].mean()),
        "train_roc_auc": roc_auc(labels[~is_test], _scores(model, inputs[~is_test], device)),
    }
    version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    model_dir = artifact_dir(settings.models_dir, feature_service, version)
    model_dir.mkdir(parents=True)
    torch.save(model.cpu().state_dict(), model_dir / MODEL_FILE)
    save_numpy_weights(model, model_dir / WEIGHTS_FILE)
    entity_types = {entity.join_key: entity.value_type for entity in store.list_entities()}
    registered = {view: store.get_feature_view(view) for view in views}
    layouts = {view: layout_from_feature_view(registered[view], entity_types) for view in views}
    manifest = ModelManifest(
        model="fraud_mlp",
        version=version,
        model_file=MODEL_FILE,
        weights_file=WEIGHTS_FILE,
        project=settings.feast_project,
        feature_service=feature_service,
        feature_refs=tuple(refs),
        request_features=tuple(REQUEST_FEATURES),
        user_mean_feature=USER_MEAN_FEATURE,
        n_inputs=int(inputs.shape[1]),
        feature_views={
            view: ViewPin(fingerprint=view_fingerprint(registered[view]), join_keys=layouts[view].join_keys,
                          features=layouts[view].features,
                          ttl_seconds=int(layouts[view].ttl.total_seconds()) if layouts[view].ttl else None)
            for view in views
        },
        training=TrainingEvidence(
            training_window={
                "train": [str(days[0]), str(days[-holdout_days - 1])],
                "test": [str(days[-holdout_days]), str(days[-1])],
            },
            rows={
                "train": int((~is_test).sum()), "test": int(is_test.sum()),
                "train_positives": int(labels[~is_test].sum()), "test_positives": int(labels[is_test].sum()),
            },
            metrics=metrics,
            metric_floor={"test_roc_auc": metric_floor(service)},
            trained_on=str(device),
            epochs=epochs,
            seconds=round(time.perf_counter() - started, 2),
        ),
    )
    manifest.write(model_dir)
    save_drift_baseline(model_dir, version, feature_service, frame[is_test], refs, settings.offline_dir, days[-holdout_days:])
    result = TrainingResult(model_dir=model_dir, manifest=manifest)
    if result.promoted:
        promote(settings.models_dir, manifest)
    return result
