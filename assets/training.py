"""Training assets, derived from the Feast feature services tagged with a `model`: the PIT-correct
training set, the model, and a blocking check that the model reaches the service's metric floor."""

import time

import dagster as dg

from assets.resources import PlatformResource
from training.train import build_training_set, metric_floor, train


def training_assets(services) -> list[dg.AssetsDefinition]:
    assets: list[dg.AssetsDefinition] = []
    for service in sorted((s for s in services if "model" in s.tags), key=lambda s: s.name):
        assets += _service_assets(service)
    return assets


def _service_assets(service) -> list[dg.AssetsDefinition]:
    views = sorted({projection.name for projection in service.feature_view_projections})
    set_key = dg.AssetKey(["training", service.name, "training_set"])
    model_key = dg.AssetKey(["training", service.name, "model"])
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
        key=model_key,
        deps=[set_key],
        group_name="training",
        kinds={"pytorch"},
        description=f"`{service.tags['model']}` trained on `{service.name}`; served only if it passes its metric floor.",
        check_specs=[dg.AssetCheckSpec("beats_metric_floor", asset=model_key, blocking=True,
                                       description=f"test ROC AUC >= {floor} on the time-based holdout")],
    )
    def _model(platform: PlatformResource):
        import pandas as pd

        settings = platform.settings
        frame = pd.read_parquet(settings.state_dir / "training_sets" / service.name / "training_set.parquet")
        result = train(settings, platform.redis_endpoint.url, service.name, frame=frame)
        metrics = result.manifest.training.metrics
        yield dg.MaterializeResult(metadata={
            **{name: round(value, 4) for name, value in metrics.items()},
            "model_dir": dg.MetadataValue.path(str(result.model_dir)),
            "promoted": result.promoted,
            "device": result.manifest.training.trained_on,
        })
        yield dg.AssetCheckResult(
            check_name="beats_metric_floor",
            passed=result.promoted,
            metadata={"test_roc_auc": round(metrics["test_roc_auc"], 4), "floor": floor},
            description=None if result.promoted else f"test ROC AUC {metrics['test_roc_auc']:.3f} < floor {floor}: not promoted",
        )

    return [_training_set, _model]
