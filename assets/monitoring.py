"""Model monitoring in Dagster, per feature service with a model: daily assets that compute (in
monitoring/) and record (core/monitoring.py, read by the catalog and its /metrics) one day's

  monitoring/<service>/feature_drift         PSI and KS per feature, served values and the offline partition,
                                             against the promoted model's training baseline
                                             check feature_drift (WARNING): a feature above its view's thresholds
  monitoring/<service>/skew                  a sample of served rows against their point-in-time vectors
                                             check training_serving_skew: a view's differing share above skew_max_ratio
  monitoring/<service>/realized_performance  ROC AUC / PR AUC per model version once the day's labels matured
                                             check realized_performance: below the holdout metric by more than the margin

None blocks anything (nothing downstream); failures alert through the alert sensors like every check.
`monitor_served_day` runs drift and skew each night for the day before; `realized_performance` runs the
day whose labels matured (LABEL_MATURITY + 1 day ago). A run tag featurestack/reference_time (ISO) sets
"now" for label maturity.
"""


from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from assets.checks import _markdown_table, reference_time
from assets.resources import PlatformResource
from core.artifacts import MANIFEST_FILE, ModelManifest, artifact_dir
from core.model_registry import CHAMPION, ModelRegistry
from core.monitoring import DriftBaseline, write_report
from core.served_log import read_served_day

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureService, FeatureView

DRIFT_CHECK = "feature_drift"
SKEW_CHECK = "training_serving_skew"
REALIZED_CHECK = "realized_performance"
MONITOR_JOB = "monitor_served_day"
REALIZED_JOB = "realized_performance"


def drift_key(service: str) -> dg.AssetKey:
    return dg.AssetKey(["monitoring", service, "feature_drift"])


def skew_key(service: str) -> dg.AssetKey:
    return dg.AssetKey(["monitoring", service, "skew"])


def realized_key(service: str) -> dg.AssetKey:
    return dg.AssetKey(["monitoring", service, "realized_performance"])


def _champion(platform: PlatformResource, service: "FeatureService") -> tuple[ModelManifest, Path]:
    """The champion's manifest and folder (its drift baseline sits beside the manifest)."""
    from training.train import model_name

    settings = platform.settings
    registry = ModelRegistry(settings.tracking_uri, settings.model_cache_dir)
    champion = registry.by_alias(model_name(service), CHAMPION)
    if champion is None:
        raise FileNotFoundError(f"no champion of models:/{model_name(service)} (feature service {service.name}) in "
                                f"{settings.tracking_uri}: train and promote one first")
    model_dir = registry.fetch(champion).model_dir
    return ModelManifest.read(model_dir), model_dir


def _manifest_of(platform: PlatformResource, service: str):
    """The manifest of a version as the served-feature log names it: a registry version number (serving
    by alias), or the version of a model folder (FEATURESTACK_MODEL_DIR)."""
    settings = platform.settings

    def manifest_of(model_name: str, version: str) -> ModelManifest:
        folder = artifact_dir(settings.models_dir, service, version)
        if (folder / MANIFEST_FILE).is_file():
            return ModelManifest.read(folder)
        registry = ModelRegistry(settings.tracking_uri, settings.model_cache_dir)
        return ModelManifest.read(registry.fetch(registry.get(model_name, version)).model_dir)

    return manifest_of


def _served(platform: PlatformResource, service: str, day: date, required: bool) -> "pd.DataFrame | None":
    served = read_served_day(platform.settings.offline_dir, service, day)
    if served is None and required:
        raise FileNotFoundError(f"no served-feature log of {service} for {day} (serving writes it; was the model served that day?)")
    return served


def _service_assets(service: "FeatureService", view_tags: dict[str, dict[str, str]],
                    partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    from monitoring.realized import margin

    name = service.name
    views = sorted({projection.name for projection in service.feature_view_projections})
    allowed_drop = margin(service.tags, name)

    @dg.asset(
        key=drift_key(name), partitions_def=partitions_def, group_name="monitoring", kinds={"scipy"},
        deps=[dg.AssetKey(["features", view]) for view in views],
        description=f"PSI and KS per `{name}` feature (served values, offline partition) against the promoted model's training baseline.",
        check_specs=[dg.AssetCheckSpec(DRIFT_CHECK, asset=drift_key(name), description=(
            "Every feature's PSI and KS within its view's drift_psi_threshold / drift_ks_threshold (warning, not blocking)"))],
    )
    def _drift(context: dg.AssetExecutionContext, platform: PlatformResource):
        from monitoring.drift import drift_of_day

        day = date.fromisoformat(context.partition_key)
        manifest, model_dir = _champion(platform, service)
        report = drift_of_day(DriftBaseline.read(model_dir), view_tags, day, _served(platform, name, day, required=False),
                              platform.settings.offline_dir)
        write_report(platform.settings.state_dir, report)
        breaches = report.breaches
        table = [{"source": d.source, "feature": f"{d.view}:{d.feature}", "psi": round(d.psi, 4), "ks": round(d.ks, 4),
                  "rows": d.rows, "breached": d.breached} for d in report.features]
        yield dg.MaterializeResult(metadata={
            "model_version": manifest.version, "features": len(report.features),
            "max_psi": round(max((d.psi for d in report.features), default=0.0), 4),
            "max_ks": round(max((d.ks for d in report.features), default=0.0), 4),
            "missing_sources": ", ".join(report.missing_sources) or "none",
            "drift": dg.MetadataValue.md(_markdown_table(table)),
        })
        yield dg.AssetCheckResult(
            check_name=DRIFT_CHECK, passed=not breaches, severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(f"{d.source} {d.view}:{d.feature} PSI {d.psi:.3f} (> {d.psi_threshold:g}?) KS {d.ks:.3f} (> {d.ks_threshold:g}?)"
                                  for d in breaches)[:2000] or None,
            metadata={"breached": dg.MetadataValue.json(sorted({f"{d.view}:{d.feature}" for d in breaches})),
                      "breached_sources": dg.MetadataValue.json(sorted({f"{d.source}:{d.view}:{d.feature}" for d in breaches}))},
        )

    @dg.asset(
        key=skew_key(name), partitions_def=partitions_def, group_name="monitoring", kinds={"feast"},
        deps=[dg.AssetKey(["features", view]) for view in views],
        description=f"Share of sampled served `{name}` rows whose vector differs from the point-in-time vector, per view.",
        check_specs=[dg.AssetCheckSpec(SKEW_CHECK, asset=skew_key(name), description=(
            "Per view, the share of sampled served rows that differ from the training vector is at most skew_max_ratio"))],
    )
    def _skew(context: dg.AssetExecutionContext, platform: PlatformResource):
        from monitoring.skew import skew_of_day

        day = date.fromisoformat(context.partition_key)
        manifest, _ = _champion(platform, service)
        report = skew_of_day(platform.feature_store(), manifest, view_tags, day.isoformat(), _served(platform, name, day, required=True))
        write_report(platform.settings.state_dir, report)
        breaches = [v for v in report.views if v.breached]
        yield dg.MaterializeResult(metadata={
            "model_version": manifest.version, "served_rows": report.served_rows,
            **{f"skew_ratio/{v.view}": round(v.ratio, 4) for v in report.views},
            "examples": dg.MetadataValue.json(list(report.examples)),
        })
        yield dg.AssetCheckResult(
            check_name=SKEW_CHECK, passed=not breaches, severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(f"{v.view}: {v.differing} of {v.compared} sampled rows differ ({v.ratio:.1%} > {v.threshold:.1%})"
                                  for v in breaches) or None,
            metadata={"breached_views": dg.MetadataValue.json([v.view for v in breaches])},
        )

    @dg.asset(
        key=realized_key(name), partitions_def=partitions_def, group_name="monitoring", kinds={"duckdb"},
        deps=[dg.AssetKey(["raw", "chargebacks"])],
        description=f"Realized ROC AUC / PR AUC of each model version serving `{name}` on the day, once its labels matured.",
        check_specs=[dg.AssetCheckSpec(REALIZED_CHECK, asset=realized_key(name), description=(
            f"Realized ROC AUC at least the training holdout's minus {allowed_drop:g} (tag realized_roc_auc_margin)"))],
    )
    def _realized(context: dg.AssetExecutionContext, platform: PlatformResource):
        from monitoring.realized import realized_performance

        day = date.fromisoformat(context.partition_key)
        settings = platform.settings
        report = realized_performance(_served(platform, name, day, required=True), settings.raw_dir, _manifest_of(platform, name),
                                      name, day, reference_time(context), allowed_drop)
        write_report(settings.state_dir, report)
        degraded = [m for m in report.models if m.degraded]
        yield dg.MaterializeResult(metadata={
            "labels_as_of": report.labels_as_of,
            "models": dg.MetadataValue.md(_markdown_table([
                {"model_version": m.model_version, "variant": m.variant, "rows": m.rows, "positives": m.positives,
                 "roc_auc": round(m.roc_auc, 4), "pr_auc": round(m.pr_auc, 4), "holdout_roc_auc": round(m.holdout_roc_auc, 4)}
                for m in report.models])),
        })
        yield dg.AssetCheckResult(
            check_name=REALIZED_CHECK, passed=not degraded, severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(f"{m.model_version} ({m.variant}): realized ROC AUC {m.roc_auc:.3f} < holdout {m.holdout_roc_auc:.3f} "
                                  f"- {m.margin:g}" for m in degraded) or None,
            metadata={"degraded_versions": dg.MetadataValue.json([m.model_version for m in degraded])},
        )

    return [_drift, _skew, _realized]


def monitoring_definitions(services: "list[FeatureService]", views: "list[FeatureView]", partitions_def: dg.PartitionsDefinition):
    """(assets, jobs, schedules) of every feature service with a model."""
    from monitoring.realized import LABEL_MATURITY

    view_tags = {view.name: dict(view.tags) for view in views}
    assets = []
    for service in sorted((s for s in services if "model" in s.tags), key=lambda s: s.name):
        assets += _service_assets(service, view_tags, partitions_def)
    served_day = [key for asset in assets for key in asset.keys if key.path[-1] in ("feature_drift", "skew")]
    realized = [key for asset in assets for key in asset.keys if key.path[-1] == "realized_performance"]
    monitor_job = dg.define_asset_job(MONITOR_JOB, selection=dg.AssetSelection.assets(*served_day),
                                      description="One served day: feature drift and training/serving skew.")
    realized_job = dg.define_asset_job(REALIZED_JOB, selection=dg.AssetSelection.assets(*realized),
                                       description="Realized model performance of the day whose labels just matured.")
    matured_after = LABEL_MATURITY + timedelta(days=1)

    @dg.schedule(job=realized_job, cron_schedule="0 3 * * *", execution_timezone="UTC", name="realized_performance_nightly",
                 description=f"Each night, the day that ended {matured_after.days} days ago (its labels just matured).")
    def _realized_schedule(context: dg.ScheduleEvaluationContext):
        scheduled: datetime = context.scheduled_execution_time
        return dg.RunRequest(partition_key=(scheduled.date() - matured_after).isoformat())

    # Drift and skew at 02:00, after the daily job (01:00) wrote the day's offline partitions.
    schedules = [dg.build_schedule_from_partitioned_job(monitor_job, hour_of_day=2, minute_of_hour=0), _realized_schedule]
    return assets, [monitor_job, realized_job], schedules
