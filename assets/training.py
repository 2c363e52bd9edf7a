"""Training assets, derived from the Feast feature services tagged with a `model`: the PIT-correct
training set, the model, and a blocking check that the model reaches the service's metric floor."""

import time

import dagster as dg

from assets.resources import PlatformResource
from training.train import TrainingResult, build_training_set, metric_floor, train


METRIC_FLOOR_CHECK = "beats_metric_floor"


def training_set_key(service_name: str) -> dg.AssetKey:
    return dg.AssetKey(["training", service_name, "training_set"])


def model_key(service_name: str) -> dg.AssetKey:
    return dg.AssetKey(["training", service_name, "model"])


def model_metadata(result: TrainingResult) -> dict:
    return {
        **{name: round(value, 4) for name, value in result.manifest.training.metrics.items()},
        "model_dir": dg.MetadataValue.path(str(result.model_dir)),
        "promoted": result.promoted,
        "device": result.manifest.training.trained_on,
    }


def metric_floor_check(result: TrainingResult, floor: float) -> dict:
    """The beats_metric_floor check's outcome, as AssetCheckResult/AssetCheckEvaluation arguments."""
    test_roc_auc = result.manifest.training.metrics["test_roc_auc"]
    return {
        "check_name": METRIC_FLOOR_CHECK,
        "passed": result.promoted,
        "metadata": {"test_roc_auc": round(test_roc_auc, 4), "floor": floor},
        "description": None if result.promoted else f"test ROC AUC {test_roc_auc:.3f} < floor {floor}: not promoted",
    }


def record_training(instance: dg.DagsterInstance, result: TrainingResult) -> None:
    """What `featurestack train` made outside Dagster, recorded on the instance as materializations of
    the training assets (the model's metrics as metadata, as the assets record them) and the
    model's metric-floor check, so the asset pages show it."""
    manifest = result.manifest
    service = manifest.feature_service
    source = {"recorded_by": "featurestack train", "model_version": manifest.version}
    rows = manifest.training.rows
    instance.report_runless_asset_event(dg.AssetMaterialization(training_set_key(service), metadata={
        "dagster/row_count": rows["train"] + rows["test"],
        "positives": rows["train_positives"] + rows["test_positives"],
        "training_window": dg.MetadataValue.json(manifest.training.training_window),
        **source,
    }))
    instance.report_runless_asset_event(dg.AssetMaterialization(model_key(service), metadata={**model_metadata(result), **source}))
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=model_key(service), **metric_floor_check(result, manifest.training.metric_floor["test_roc_auc"]),
    ))


def training_assets(services) -> list[dg.AssetsDefinition]:
    assets: list[dg.AssetsDefinition] = []
    for service in sorted((s for s in services if "model" in s.tags), key=lambda s: s.name):
        assets += _service_assets(service)
    return assets


def _service_assets(service) -> list[dg.AssetsDefinition]:
    views = sorted({projection.name for projection in service.feature_view_projections})
    set_key = training_set_key(service.name)
    service_model_key = model_key(service.name)
    floor = metric_floor(service)

    @dg.asset(
        key=set_key,
        deps=[dg.AssetKey(["features", view]) for view in views],
        group_name="training",
        kinds={"feast", "parquet"},
        description=f"Labelled transactions with `{service.name}` features, point-in-time correct (Feast SDK).",
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
            "path": dg.MetadataValue.path(str(path)),
            "seconds": round(time.perf_counter() - started, 2),
        })

    @dg.asset(
        key=service_model_key,
        deps=[set_key],
        group_name="training",
        kinds={"pytorch"},
        description=f"`{service.tags['model']}` trained on `{service.name}`; served only if it passes its metric floor.",
        check_specs=[dg.AssetCheckSpec(METRIC_FLOOR_CHECK, asset=service_model_key, blocking=True,
                                       description=f"test ROC AUC >= {floor} on the time-based holdout")],
    )
    def _model(platform: PlatformResource):
        import pandas as pd

        settings = platform.settings
        frame = pd.read_parquet(settings.state_dir / "training_sets" / service.name / "training_set.parquet")
        result = train(settings, platform.redis_endpoint.url, service.name, frame=frame)
        yield dg.MaterializeResult(metadata=model_metadata(result))
        yield dg.AssetCheckResult(**metric_floor_check(result, floor))

    return [_training_set, _model]
