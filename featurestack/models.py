"""`featurestack models list | promote [VERSION] | rollback`: the registry on the command line.
A refusal raises ValueError with the reason (the CLI prints it and exits 1)."""

from __future__ import annotations

from datetime import datetime, timezone

from core.model_registry import CHAMPION, ModelRegistry, run_url
from core.settings import Settings


def _registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(settings.tracking_uri, settings.model_cache_dir)


def list_models(settings: Settings, name: str) -> None:
    from training.promotion import GATE_PASSED_TAG

    registry = _registry(settings)
    versions = registry.versions(name)
    if not versions:
        raise ValueError(f"no registered model {name!r} at {settings.tracking_uri}: run `featurestack train`")
    print(f"{name} at {settings.tracking_uri}")
    print(f"{'version':>7}  {'aliases':<20} {'created (UTC)':<20} {'holdout roc_auc':>15}  {'gate':<6} run")
    for version in versions:
        run = registry.client.get_run(version.run_id)
        auc = run.data.metrics.get("test_roc_auc")
        created = datetime.fromtimestamp(version.created_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        gate = {"true": "passed", "false": "failed"}.get(version.tags.get(GATE_PASSED_TAG, ""), "-")
        print(f"{version.version:>7}  {','.join(version.aliases) or '-':<20} {created:<20} "
              f"{f'{auc:.4f}' if auc is not None else '-':>15}  {gate:<6} "
              f"{run_url(settings.mlflow_ui_url, run.info.experiment_id, version.run_id)}")
    print(f"champion history (oldest first): {registry.champion_history(name) or 'none'}")


def promote(settings: Settings, name: str, version: str | None) -> None:
    from training.promotion import challenger_version, promote_version

    registry = _registry(settings)
    version = version or challenger_version(registry, name)
    promote_version(registry, name, version, note="promoted by `featurestack models promote`")
    print(f"{name} version {version} is the champion (models:/{name}@{CHAMPION})")


def rollback(settings: Settings, name: str) -> None:
    from training.promotion import rollback as roll_back

    current, previous = roll_back(_registry(settings), name)
    print(f"{name}: champion moved back from version {current} to version {previous}")
