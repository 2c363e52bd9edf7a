"""`featurestack train`: a point-in-time correct training set through the Feast SDK with labels as
known at the cutoff, a torch model evaluated on a time-based holdout, a manifest that pins exactly what
it was trained on, an MLflow run (Feast's integration, `store.mlflow`) and a new registered version
with the alias `challenger`. Whether it becomes `champion` is the promotion gate's call
(training.promotion)."""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from core.artifacts import ModelManifest, TrainingEvidence, ViewPin, artifact_dir
from core.feast_repo import open_store
from core.model_registry import CHALLENGER, CHAMPION, ModelRegistry, ModelVersion
from core.settings import Settings
from onlinestore.redis_layout import layout_from_feature_view
from training.baseline import save_drift_baseline
from training.labels import ENTITY_COLUMNS, LabelWindow, labelled_transactions
from training.model import (
    REQUEST_FEATURES, WEIGHTS_FILE, FraudMLP, average_precision, calibration_error, model_inputs, pick_device, roc_auc,
    save_numpy_weights,
)

USER_MEAN_FEATURE = "user_velocity:amount_mean_7d"
MODEL_FILE = "model.pt"
MODEL_TAG = "model"  # the feature service tag naming the registered model trained on it
ENTITY_DF_ARTIFACT = "entity_df.parquet"  # the name Feast's get_training_entity_df(run_id) reads
# Version tags the registry carries for every version training registers.
FEATURE_SERVICE_TAG = "feature_service"
ARTIFACT_VERSION_TAG = "artifact_version"


@dataclass(frozen=True)
class TrainingResult:
    model_dir: Path
    manifest: ModelManifest
    run_id: str
    experiment_id: str
    registered: ModelVersion  # the new version, alias `challenger`
    champion: ModelVersion | None  # the champion when this version was trained
    # The champion scored on this version's holdout ({} without a champion); the gate compares them.
    champion_metrics: dict[str, float]
    feature_coverage: dict[str, float]  # "view:feature" -> share of holdout rows with a value
    service_tags: dict[str, str]  # the feature service's tags: the gate's thresholds
    latency_batch: np.ndarray = field(repr=False)  # holdout rows as model inputs, to time the serving runner on


def model_name(service) -> str:
    name = service.tags.get(MODEL_TAG)
    if not name:
        raise ValueError(f"feature service {service.name} has no tag {MODEL_TAG!r}: the registered model trained on it")
    return name


def view_fingerprint(view) -> str:
    """Changes whenever the view's definition (schema, source, ttl, ...) changes."""
    return hashlib.sha256(view.to_proto().spec.SerializeToString(deterministic=True)).hexdigest()[:16]


def feature_refs(service) -> list[str]:
    return [f"{projection.name_to_use()}:{field.name}" for projection in service.feature_view_projections for field in projection.features]


def training_set(store, service, entities: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    refs = feature_refs(service)
    frame = store.get_historical_features(entity_df=entities, features=service, full_feature_names=True).to_df()
    frame = frame.sort_values(["event_timestamp", "txn_id"]).reset_index(drop=True)
    return frame.rename(columns={ref.replace(":", "__"): ref for ref in refs}), refs


def build_training_set(settings: Settings, redis_url: str, feature_service: str, cutoff: datetime | None = None) -> pd.DataFrame:
    """Labelled transactions (labels as known at `cutoff`, default now) with the feature service's
    features, point-in-time correct; the label window rides along in `frame.attrs` (kept by parquet)."""
    store = open_store(settings, redis_url)
    service = store.get_feature_service(feature_service)
    window = LabelWindow.for_service(service.tags, cutoff)
    frame, _refs = training_set(store, service, labelled_transactions(settings, window))
    frame.attrs.update(window.describe())
    return frame


def _inputs(frame: pd.DataFrame, refs: list[str]) -> np.ndarray:
    views = list(dict.fromkeys(ref.split(":")[0] for ref in refs))
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


def _calibrate(model: FraudMLP, inputs: np.ndarray, labels: np.ndarray, device: torch.device) -> dict[str, float]:
    """Platt scaling fitted on the training rows, folded into the last layer: the class weighting of the
    loss inflates the raw scores, and a probability must mean what it says. Ranking is unchanged."""
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs).to(device)).double().cpu()
    target = torch.from_numpy(labels.astype(np.float64))
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=100, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = nn.functional.binary_cross_entropy_with_logits(params[0] * logits + params[1], target)
        value.backward()
        return value

    optimizer.step(loss)
    slope, intercept = (float(v) for v in params.detach())
    last = model.layers[-1]
    with torch.no_grad():
        last.weight.mul_(slope)
        last.bias.mul_(slope).add_(intercept)
    return {"platt_slope": slope, "platt_intercept": intercept}


def _scores(model: FraudMLP, inputs: np.ndarray, device: torch.device) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(inputs).to(device))).cpu().numpy()


def _metrics(prefix: str, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC, calibration error, rows and positives; a metric a set cannot define is left out."""
    metrics = {f"{prefix}rows": float(len(labels)), f"{prefix}positives": float(labels.sum())}
    if len(labels):
        metrics[f"{prefix}base_rate"] = float(labels.mean())
        metrics[f"{prefix}calibration_error"] = calibration_error(labels, scores)
    if 0 < labels.sum() < len(labels):
        metrics[f"{prefix}roc_auc"] = roc_auc(labels, scores)
        metrics[f"{prefix}pr_auc"] = average_precision(labels, scores)
    return metrics


def modelled_days(day_of: np.ndarray, matured: np.ndarray, holdout_days: int) -> list:
    """The days a model is fitted and judged on: up to the last day whose every label has matured when
    there are more such days than the holdout needs (the holdout is then judged on final labels);
    otherwise every day, the holdout judged on the labels reported so far (its metrics say how many matured)."""
    every_day = sorted(set(day_of))
    immature_days = set(day_of[~matured])
    matured_days = [day for day in every_day if day not in immature_days]
    if len(matured_days) > holdout_days:
        return [day for day in every_day if day <= matured_days[-1]]
    return every_day


def holdout_metrics(frame: pd.DataFrame, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """`test_*` over the holdout (labels as known at the cutoff), the same over its matured and its
    immature rows apart, and per holdout day (`day.<YYYY-MM-DD>.*`)."""
    matured = frame["label_matured"].to_numpy(bool)
    metrics = {**_metrics("test_", labels, scores),
               **_metrics("test_matured_", labels[matured], scores[matured]),
               **_metrics("test_immature_", labels[~matured], scores[~matured])}
    days = frame["event_timestamp"].dt.date.to_numpy()
    for day in sorted(set(days)):
        on_day = days == day
        metrics.update(_metrics(f"day.{day}.", labels[on_day], scores[on_day]))
    return metrics


def _champion_metrics(registry: ModelRegistry, champion: ModelVersion, test: pd.DataFrame, labels: np.ndarray) -> dict[str, float]:
    """The champion scored on the challenger's holdout rows (the same rows, the same labels)."""
    resolved = registry.fetch(champion)
    manifest = ModelManifest.read(resolved.model_dir)
    if missing := sorted(set(manifest.feature_refs) - set(test.columns)):
        raise ValueError(f"champion {champion.name} v{champion.version} reads features this training set lacks: {missing}")
    model = FraudMLP(manifest.n_inputs)
    model.load_state_dict(torch.load(resolved.model_dir / manifest.model_file, map_location="cpu"))
    return holdout_metrics(test, labels, _scores(model.eval(), _inputs(test, list(manifest.feature_refs)), torch.device("cpu")))


def _experiment_id(registry: ModelRegistry, settings: Settings) -> str:
    """The Feast project's experiment. On a database store its artifacts go under the settings'
    artifact root (never ./mlruns); a tracking server (http[s]://) keeps them where it is configured to."""
    found = registry.client.get_experiment_by_name(settings.feast_project)
    if found is not None:
        return found.experiment_id
    if settings.tracking_uri.startswith(("http://", "https://")):
        return registry.client.create_experiment(settings.feast_project)
    location = settings.mlflow_artifact_root / settings.feast_project
    location.mkdir(parents=True, exist_ok=True)
    return registry.client.create_experiment(settings.feast_project, artifact_location=location.as_uri())


def train(settings: Settings, redis_url: str, feature_service: str = "fraud_detection_v1", epochs: int = 10,
          holdout_days: int = 1, seed: int = 0, frame: pd.DataFrame | None = None,
          cutoff: datetime | None = None) -> TrainingResult:
    """Fit on the earlier days, evaluate on the last `holdout_days` (labels as known at `cutoff`, default
    now; `frame` from build_training_set carries its own), log the run and register a new version
    (alias `challenger`), with the champion scored on the same holdout for the gate."""
    started = time.perf_counter()
    store = open_store(settings, redis_url)
    service = store.get_feature_service(feature_service)
    name = model_name(service)
    refs = feature_refs(service)
    if frame is None:
        frame = build_training_set(settings, redis_url, feature_service, cutoff)
    elif cutoff is not None:
        raise ValueError("give a label cutoff or a built training set (it carries its own cutoff), not both")
    window = LabelWindow.from_described(frame.attrs)
    views = list(dict.fromkeys(ref.split(":")[0] for ref in refs))
    day_of = frame["event_timestamp"].dt.date.to_numpy()
    days = modelled_days(day_of, frame["label_matured"].to_numpy(bool), holdout_days)
    if len(days) <= holdout_days:
        raise ValueError(f"need more than {holdout_days} day(s) of transactions before the label cutoff "
                         f"{window.cutoff.isoformat()} for a time-based holdout, found {len(days)}")
    is_test = (day_of >= days[-holdout_days]) & (day_of <= days[-1])
    is_train = day_of < days[-holdout_days]
    # Days after the holdout (labels still arriving) are neither fitted nor judged on: reported apart.
    is_later = day_of > days[-1]
    inputs, labels = _inputs(frame, refs), frame["is_fraud"].to_numpy()
    test = frame[is_test].reset_index(drop=True)
    device = pick_device()
    model = _fit(inputs[is_train], labels[is_train], epochs, device, seed)
    calibration = _calibrate(model, inputs[is_train], labels[is_train], device)
    metrics = {**holdout_metrics(test, labels[is_test], _scores(model, inputs[is_test], device)),
               **(_metrics("after_holdout_", labels[is_later], _scores(model, inputs[is_later], device)) if is_later.any() else {}),
               "train_roc_auc": roc_auc(labels[is_train], _scores(model, inputs[is_train], device))}
    coverage = {ref: float(test[ref].notna().mean()) for ref in refs}

    registry = ModelRegistry(settings.tracking_uri, settings.model_cache_dir)
    champion = registry.by_alias(name, CHAMPION)
    champion_metrics = _champion_metrics(registry, champion, test, labels[is_test]) if champion else {}

    version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    model_dir = artifact_dir(settings.models_dir, feature_service, version)
    model_dir.mkdir(parents=True)
    model = model.cpu()
    torch.save(model.state_dict(), model_dir / MODEL_FILE)
    save_numpy_weights(model, model_dir / WEIGHTS_FILE)
    entity_types = {entity.join_key: entity.value_type for entity in store.list_entities()}
    registered_views = {view: store.get_feature_view(view) for view in views}
    layouts = {view: layout_from_feature_view(registered_views[view], entity_types) for view in views}
    fingerprints = {view: view_fingerprint(registered_views[view]) for view in views}
    rows = {
        "train": int(is_train.sum()), "test": int(is_test.sum()), "after_holdout": int(is_later.sum()),
        "train_positives": int(labels[is_train].sum()), "test_positives": int(labels[is_test].sum()),
        "matured": int(frame["label_matured"].sum()), "immature": int((~frame["label_matured"]).sum()),
    }
    manifest = ModelManifest(
        model=name,
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
            view: ViewPin(fingerprint=fingerprints[view], join_keys=layouts[view].join_keys, features=layouts[view].features,
                          ttl_seconds=int(layouts[view].ttl.total_seconds()) if layouts[view].ttl else None)
            for view in views
        },
        training=TrainingEvidence(
            training_window={"train": [str(days[0]), str(days[-holdout_days - 1])], "test": [str(days[-holdout_days]), str(days[-1])]},
            rows=rows,
            metrics=metrics,
            metric_floor={"test_roc_auc": float(service.tags.get("min_test_roc_auc", "0.5"))},
            trained_on=str(device),
            epochs=epochs,
            seconds=round(time.perf_counter() - started, 2),
            labels=window.describe(),
        ),
    )
    manifest.write(model_dir)
    save_drift_baseline(model_dir, version, feature_service, test, refs, settings.offline_dir, days[-holdout_days:])

    with registry.fluent():
        run_id, experiment_id, model_uri = _log_run(store, registry, settings, service, manifest, model, model_dir, frame, champion,
                                         champion_metrics, coverage, {"epochs": epochs, "holdout_days": holdout_days, "seed": seed,
                                                                      **calibration})
        registered = store.mlflow.register_model(model_uri, name)
    registry.set_version_tags(name, str(registered.version), {
        FEATURE_SERVICE_TAG: feature_service, ARTIFACT_VERSION_TAG: version, "label_cutoff": window.cutoff.isoformat()})
    registry.set_alias(name, CHALLENGER, str(registered.version))
    return TrainingResult(model_dir=model_dir, manifest=manifest, run_id=run_id, experiment_id=experiment_id,
                          registered=registry.get(name, str(registered.version)), champion=champion,
                          champion_metrics=champion_metrics, feature_coverage=coverage, service_tags=dict(service.tags),
                          latency_batch=inputs[is_test][:512])


def _log_run(store, registry: ModelRegistry, settings: Settings, service, manifest: ModelManifest, model: FraudMLP,
             model_dir: Path, frame: pd.DataFrame, champion: ModelVersion | None, champion_metrics: dict[str, float],
             coverage: dict[str, float], params: dict) -> tuple[str, str, str]:
    """The MLflow run through Feast's integration: parameters, metrics, the feature service with each
    view's fingerprint, the entity rows (get_training_entity_df(run_id) returns them) and the model, whose
    extra files are the serving artifact (manifest, weights) the registry hands to serving. Returns the
    run id, the experiment id and the logged model's URI."""
    import mlflow

    training = manifest.training
    experiment_id = _experiment_id(registry, settings)
    with store.mlflow.start_run(run_name=f"{manifest.model}-{manifest.version}", experiment_id=experiment_id,
                                tags={"feast.feature_service": service.name, "featurestack.artifact_version": manifest.version}) as run:
        store.mlflow.log_feature_retrieval(feature_refs=list(manifest.feature_refs), entity_count=len(frame),
                                           duration_seconds=0.0, feature_service=service)
        mlflow.log_params({**params, "feature_service": service.name, "label_cutoff": training.labels["cutoff"],
                           "label_maturity_days": training.labels["maturity_days"], "device": training.trained_on,
                           "train_window": "..".join(training.training_window["train"]),
                           "test_window": "..".join(training.training_window["test"]),
                           "champion_version": champion.version if champion else "none"})
        mlflow.log_metrics({**training.metrics, **{f"rows.{key}": float(value) for key, value in training.rows.items()},
                            **{f"champion.{key}": value for key, value in champion_metrics.items()},
                            **{f"coverage.{ref}": share for ref, share in coverage.items()}})
        mlflow.log_dict({"feature_service": service.name, "feature_refs": list(manifest.feature_refs),
                         "feature_views": {view: pin.fingerprint for view, pin in manifest.feature_views.items()}},
                        "feature_service.json")
        with tempfile.TemporaryDirectory() as tmp:
            entity_rows = Path(tmp) / ENTITY_DF_ARTIFACT
            frame[list(ENTITY_COLUMNS)].to_parquet(entity_rows, index=False)
            mlflow.log_artifact(str(entity_rows))
        store.mlflow.log_model(
            model, "model", flavor="pytorch", serialization_format="pickle",
            extra_files=[str(path) for path in sorted(model_dir.iterdir())],
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
        )
        return run.info.run_id, experiment_id, f"models:/{mlflow.last_logged_model().model_id}"
