"""Feast definitions as plain data: entities, feature views (with features) and feature services.

The source of truth is the Feast repo (feature_repo/, parsed as `feast apply` does). When the
registry has been applied, its materialization intervals (what was published online) are added.
Feast is imported only inside these functions: building a snapshot may be slow, serving one is not.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

DUMMY_ENTITY_NAME = "__dummy"

if TYPE_CHECKING:
    from feast import Entity, FeatureService, FeatureView

    from core.settings import Settings


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def entity_record(entity: Entity) -> dict[str, Any]:
    return {
        "name": entity.name,
        "join_keys": [entity.join_key],
        "value_type": entity.value_type.name if entity.value_type is not None else None,
        "description": entity.description,
        "owner": entity.owner,
        "tags": dict(entity.tags),
    }


def feature_view_record(view: FeatureView, join_keys: dict[str, str]) -> dict[str, Any]:
    source = view.batch_source
    intervals = [(_iso(start), _iso(end)) for start, end in (view.materialization_intervals or [])]
    return {
        "name": view.name,
        "description": view.description,
        "owner": view.owner,
        "tags": dict(view.tags),
        "entities": list(view.entities),
        "join_keys": [join_keys.get(name, name) for name in view.entities],
        "ttl_seconds": int(view.ttl.total_seconds()) if view.ttl else None,
        "online": bool(view.online),
        "source": {
            "name": getattr(source, "name", None),
            "type": type(source).__name__ if source is not None else None,
            "path": getattr(source, "path", None),
            "timestamp_field": getattr(source, "timestamp_field", None) or "event_timestamp",
        },
        "features": [
            {"name": field.name, "dtype": str(field.dtype), "description": field.description, "tags": dict(field.tags or {})}
            for field in view.features
        ],
        "materialization_intervals": [{"start": start, "end": end} for start, end in intervals],
    }


def feature_service_record(service: FeatureService) -> dict[str, Any]:
    return {
        "name": service.name,
        "description": service.description,
        "owner": service.owner,
        "tags": dict(service.tags),
        "features": [
            {"view": projection.name, "feature": feature.name}
            for projection in service.feature_view_projections
            for feature in projection.features
        ],
    }


def records_from_feast(entities: list[Entity], views: list[FeatureView], services: list[FeatureService]) -> dict[str, Any]:
    join_keys = {entity.name: entity.join_key for entity in entities}
    entities = [e for e in entities if e.name != DUMMY_ENTITY_NAME]  # Feast's placeholder for entityless views
    return {
        "entities": sorted((entity_record(e) for e in entities), key=lambda r: r["name"]),
        "feature_views": sorted((feature_view_record(v, join_keys) for v in views), key=lambda r: r["name"]),
        "feature_services": sorted((feature_service_record(s) for s in services), key=lambda r: r["name"]),
    }


def parse_feast_repo(repo_dir: Path) -> dict[str, Any]:
    """Definitions of any Feast repo folder (its modules imported by bare name, as `feast apply` does)."""
    import contextlib
    import os
    import sys

    from feast.repo_operations import parse_repo

    modules = [path.stem for path in repo_dir.glob("*.py")]
    for module in modules:
        sys.modules.pop(module, None)
    previous = os.getcwd()
    sys.path.insert(0, str(repo_dir))
    os.chdir(repo_dir)
    try:
        contents = parse_repo(repo_dir)
    finally:
        os.chdir(previous)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(repo_dir))
        for module in modules:
            sys.modules.pop(module, None)
    return records_from_feast(contents.entities, contents.feature_views, contents.feature_services)


def registry_materializations(registry_path: Path, project: str) -> dict[str, list[dict[str, str | None]]]:
    """view -> materialization intervals recorded in an applied Feast registry file ({} if none)."""
    if not registry_path.is_file():
        return {}
    from feast.infra.registry import proto_registry_utils
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

    proto = RegistryProto()
    proto.ParseFromString(registry_path.read_bytes())
    return {
        view.name: [{"start": _iso(start), "end": _iso(end)} for start, end in view.materialization_intervals]
        for view in proto_registry_utils.list_feature_views(proto, project, None)
    }


def load_definitions(settings: Settings) -> dict[str, Any]:
    """feature_repo/ (the source of truth) plus what the applied registry says was materialized."""
    from core.feast_repo import load_repo_contents

    contents = load_repo_contents(settings)
    records = records_from_feast(contents.entities, contents.feature_views, contents.feature_services)
    records["registry"] = {"path": str(settings.registry_path), "applied": settings.registry_path.is_file()}
    try:
        intervals = registry_materializations(settings.registry_path, settings.feast_project)
    except Exception as exc:  # a corrupt or incompatible registry must not hide the definitions
        records["registry"]["error"] = f"{type(exc).__name__}: {exc}"
        intervals = {}
    for view in records["feature_views"]:
        view["materialization_intervals"] = intervals.get(view["name"], view["materialization_intervals"])
    return records
