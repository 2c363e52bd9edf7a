"""Training assets, derived from the Feast feature services tagged with a `model`: the PIT-correct
training set, the model (a new registered version, alias `challenger`) with one blocking check per
promotion-gate criterion, and the champion downstream of them: it moves only when every check passed.

The latency budget is measured here, on the serving runner (training does not import serving)."""

import time

import dagster as dg
import numpy as np

from assets.resources import PlatformResource
from core.model_registry import ModelRegistry
from core.settings import Settings
from training.promotion import (
    GATE_CHECKS, GatePolicy, GateResult, challenger_version, evaluate_gate, promote_version, record_gate,
)
from training.train import TrainingResult, build_training_set, train

LATENCY_CALLS = 200  # timed calls of the serving runner (after a warm-up) for the median


def training_set_key(service_name: str) -> dg.AssetKey:
    return dg.AssetKey(["training", service_name, "training_set"])


def model_key(service_name: str) -> dg.AssetKey:
    return dg.AssetKey(["training", service_name, "model"])


def champion_key(service_name: str) -> dg.AssetKey:
    return dg.AssetKey(["training", service_name, "champion"])


def serving_latency_ms(result: TrainingResult, policy: GatePolicy, device: str) -> float:
    """The median call of the serving runner (as `featurestack serve` loads it) on a batch of holdout rows."""
    from serving.runner import load_runner

    runner = load_runner(result.model_dir, result.manifest, device)
    batch = np.resize(result.latency_batch, (policy.latency_batch_rows, result.latency_batch.shape[1]))
    for _ in range(5):
        runner.probabilities(batch)
    timings = []
    for _ in range(LATENCY_CALLS):
        started = time.perf_counter()
        runner.probabilities(batch)
        timings.append(time.perf_counter() - started)
    return float(np.median(timings) * 1000)


def gate(settings: Settings, result: TrainingResult, policy: GatePolicy | None = None) -> GateResult:
    """The gate's verdict on a freshly trained version (thresholds: the service's tags unless `policy`),
    recorded on the version (tags)."""
    policy = policy or GatePolicy.from_tags(result.manifest.feature_service, result.service_tags)
    verdict = evaluate_gate(result, policy, serving_latency_ms(result, policy, settings.serving.device))
    record_gate(ModelRegistry(settings.tracking_uri, settings.model_cache_dir), result, verdict)
    return verdict


def promote_challenger(settings: Settings, name: str, note: str) -> str:
    """The challenger becomes champion if its recorded gate passed (else a ValueError with the reasons)."""
    registry = ModelRegistry(settings.tracking_uri, settings.model_cache_dir)
    version = challenger_version(registry, name)
    promote_version(registry, name, version, note)
    return version


def model_metadata(result: TrainingResult) -> dict:
    metrics = result.manifest.training.metrics
    return {
        **{name: round(metrics[name], 4) for name in ("test_roc_auc", "test_pr_auc", "test_calibration_error", "train_roc_auc")
           if name in metrics},
        "registered_version": result.registered.version,
        "mlflow_run_id": result.run_id,
        "champion_version": result.champion.version if result.champion else "none",
        "label_cutoff": result.manifest.training.labels["cutoff"],
        "model_dir": dg.MetadataValue.path(str(result.model_dir)),
        "device": result.manifest.training.trained_on,
    }


def gate_check_results(verdict: GateResult) -> list[dict]:
    """One AssetCheckResult/AssetCheckEvaluation argument set per gate criterion."""
    return [{
        "check_name": check.name,
        "passed": check.passed,
        "metadata": {"value": check.value if check.value is not None else "none", "threshold": check.threshold,
                     "version": verdict.version},
        "description": check.reason,
    } for check in verdict.checks]


def record_training(instance: dg.DagsterInstance, result: TrainingResult, verdict: GateResult, promoted: bool) -> None:
    """What `featurestack train` made outside Dagster, recorded on the instance as materializations of
    the training assets, the gate's checks, and the champion when it moved, so the asset pages show it."""
    manifest = result.manifest
    service = manifest.feature_service
    source = {"recorded_by": "featurestack train", "model_version": manifest.version}
    rows = manifest.training.rows
    instance.report_runless_asset_event(dg.AssetMaterialization(training_set_key(service), metadata={
        "dagster/row_count": rows["train"] + rows["test"],
        "positives": rows["train_positives"] + rows["test_positives"],
        "label_matured_rows": rows["matured"],
        "training_window": dg.MetadataValue.json(manifest.training.training_window),
        **source,
    }))
    instance.report_runless_asset_event(dg.AssetMaterialization(model_key(service), metadata={**model_metadata(result), **source}))
    for check in gate_check_results(verdict):
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(asset_key=model_key(service), **check))
    if promoted:
        instance.report_runless_asset_event(dg.AssetMaterialization(champion_key(service), metadata={
            "champion_version": verdict.version, **source}))


def training_assets(services) -> list[dg.AssetsDefinition]:
    assets: list[dg.AssetsDefinition] = []
    for service in sorted((s for s in services if "model" in s.tags), key=lambda s: s.name):
        assets += _service_assets(service)
    return assets


def _service_assets(service) -> list[dg.AssetsDefinition]:
    views = sorted({projection.name for projection in service.feature_view_projections})
    set_key = training_set_key(service.name)
    service_model_key = model_key(service.name)
    name = service.tags["model"]
    policy = GatePolicy.from_tags(service.name, dict(service.tags))
    check_descriptions = {
        "enough_labels": f"the holdout holds >= {policy.min_holdout_positives} chargebacks reported by the label cutoff",
        "beats_metric_floor": f"holdout ROC AUC >= {policy.min_test_roc_auc}",
        "calibrated": f"holdout expected calibration error <= {policy.max_calibration_error}",
        "feature_coverage": f"every feature present in >= {policy.min_feature_coverage:.0%} of holdout rows",
        "latency_budget": f"median <= {policy.max_batch_latency_ms} ms per {policy.latency_batch_rows}-row call on the serving runner",
        "beats_champion": f"holdout ROC AUC >= the champion's on the same rows + {policy.min_improvement}",
    }

    @dg.asset(
        key=set_key,
        deps=[dg.AssetKey(["features", view]) for view in views],
        group_name="training",
        kinds={"feast", "parquet"},
        description=f"Labelled transactions (labels reported by the cutoff) with `{service.name}` features, point-in-time correct (Feast SDK).",
    )
    def _training_set(platform: PlatformResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        settings = platform.settings
        frame = build_training_set(settings, platform.redis_endpoint.url, service.name)
        path = settings.state_dir / "training_sets" / service.name / "training_set.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".parquet.tmp")
        frame.to_parquet(staging, index=False)
        staging.replace(path)
        return dg.MaterializeResult(metadata={
            "dagster/row_count": len(frame),
            "positives": int(frame["is_fraud"].sum()),
            "label_matured_rows": int(frame["label_matured"].sum()),
            "label_cutoff": frame.attrs["cutoff"],
            "path": dg.MetadataValue.path(str(path)),
            "seconds": round(time.perf_counter() - started, 2),
        })

    @dg.asset(
        key=service_model_key,
        deps=[set_key],
        group_name="training",
        kinds={"pytorch", "mlflow"},
        description=f"`{name}` trained on `{service.name}`: an MLflow run and a new registered version (alias challenger).",
        check_specs=[dg.AssetCheckSpec(check, asset=service_model_key, blocking=True, description=check_descriptions[check])
                     for check in GATE_CHECKS],
    )
    def _model(platform: PlatformResource):
        import pandas as pd

        settings = platform.settings
        frame = pd.read_parquet(settings.state_dir / "training_sets" / service.name / "training_set.parquet")
        result = train(settings, platform.redis_endpoint.url, service.name, frame=frame)
        verdict = gate(settings, result)
        yield dg.MaterializeResult(metadata=model_metadata(result))
        for check in gate_check_results(verdict):
            yield dg.AssetCheckResult(**check)

    @dg.asset(
        key=champion_key(service.name),
        deps=[service_model_key],
        group_name="training",
        kinds={"mlflow"},
        description=f"The `champion` alias of `{name}`: the challenger, promoted once every gate check on the model passed.",
    )
    def _champion(platform: PlatformResource) -> dg.MaterializeResult:
        version = promote_challenger(platform.settings, name, note="gate passed (Dagster)")
        return dg.MaterializeResult(metadata={"champion_version": version})

    return [_training_set, _model, _champion]
