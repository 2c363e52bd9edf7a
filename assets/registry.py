"""The Feast registry as an asset: `feast apply` of feature_repo/ with featurestack's settings."""

from __future__ import annotations

import hashlib

import dagster as dg

from assets.features import FEAST_REGISTRY_KEY
from assets.resources import PlatformResource
from core.feast_repo import apply_repo
from pathlib import Path


def feature_repo_fingerprint(repo_dir: Path) -> str:
    """Changes whenever a definition file changes (feature_views/ included), so the daemon re-applies the registry."""
    digest = hashlib.sha256()
    # Not the link feature_store.yaml: it leads to the generated config, which depends on where the platform runs.
    definitions = sorted(repo_dir.rglob("*.py")) + sorted(repo_dir.glob("*.yaml"))
    for path in (path for path in definitions if not path.is_symlink() and "__pycache__" not in path.parts):
        digest.update(str(path.relative_to(repo_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def feast_registry_asset(repo_dir: Path) -> dg.AssetsDefinition:
    @dg.asset(
        key=FEAST_REGISTRY_KEY,
        group_name="feast",
        kinds={"feast"},
        code_version=feature_repo_fingerprint(repo_dir),
        automation_condition=dg.AutomationCondition.on_missing() | dg.AutomationCondition.code_version_changed(),
        description="Feast registry applied from feature_repo/ (entities, sources, feature views, feature services).",
    )
    def feast_registry(platform: PlatformResource) -> dg.MaterializeResult:
        return _apply(platform)

    return feast_registry


def _apply(platform: PlatformResource) -> dg.MaterializeResult:
    contents = apply_repo(platform.settings, platform.redis_endpoint.url)
    return dg.MaterializeResult(metadata={
        "registry": dg.MetadataValue.path(str(platform.settings.registry_path)),
        "project": platform.settings.feast_project,
        "offline_profile": platform.settings.offline_profile,
        "feature_views": dg.MetadataValue.json({
            view.name: [field.name for field in view.features] for view in contents.feature_views
        }),
        "feature_services": ", ".join(service.name for service in contents.feature_services),
        "entities": ", ".join(entity.name for entity in contents.entities),
    })
