"""The catalog snapshot: one JSON document with everything the web page, the API and the CLI show.

    Feast definitions (feature_repo/ + applied registry)  -> entities, views, features, services
    Dagster instance                                      -> last materialization per partition, checks
    offline parquet (DuckDB)                              -> statistics per feature, newest values
    pipelines/ + model manifests                          -> lineage and usage
    now vs freshness_sla_hours                            -> freshness, offline and online

Building it is the slow part (Feast, DuckDB scans): do it once (at start, on demand, or as the
`catalog` Dagster asset) and serve the result.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from catalog.lineage import CatalogModel, build_lineage, load_models, pipeline_info, windowed_pipeline_info
from catalog.stats import compute_table_stats, has_partitions
from core.feast_repo import SLA_TAG, VIEW_MODULES, sla_hours

if TYPE_CHECKING:
    import dagster as dg

    from core.settings import Settings

SNAPSHOT_VERSION = 4  # 3: models come from the model registry (versions, aliases, run links); 4: monitoring
SNAPSHOT_FILE = "catalog.json"
_USE_SETTINGS = object()


class CatalogSnapshot(TypedDict):
    """catalog.json: everything the catalog web page, JSON API and CLI show."""

    version: int
    generated_at: str
    project: str
    offline_profile: str
    registry: Any
    dagster_home: str | None
    entities: list[dict[str, Any]]
    feature_views: list[dict[str, Any]]
    feature_services: list[dict[str, Any]]
    features: list[dict[str, Any]]
    models: list[CatalogModel]
    lineage: dict[str, Any]
    monitoring: dict[str, list[dict[str, Any]]]  # the latest drift / realized_performance / skew report per feature service
    errors: list[str]
    build_seconds: float


def catalog_dir(settings: Settings) -> Path:
    return settings.state_dir / "catalog"


def _parse(moment: str | None) -> datetime | None:
    if not moment:
        return None
    parsed = datetime.fromisoformat(moment)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _sla_hours(view: dict[str, Any]) -> float | None:
    """The view's SLA, or None when its tag is missing or unusable (shown as unknown freshness)."""
    try:
        return sla_hours(view["name"], view["tags"])
    except ValueError:
        return None


def _freshness_of(newest: datetime | None, sla: float | None, now: datetime, what: str) -> dict[str, Any]:
    if newest is None:
        return {"status": "unknown", "newest": None, "age_hours": None, "reason": f"no {what} data"}
    age = (now - newest).total_seconds() / 3600
    if sla is None:
        return {"status": "unknown", "newest": newest.isoformat(), "age_hours": round(age, 2), "reason": f"no usable {SLA_TAG} tag"}
    status = "fresh" if age <= sla else "stale"
    return {"status": status, "newest": newest.isoformat(), "age_hours": round(age, 2),
            "reason": f"newest {what} value is {age:.1f} h old, SLA {sla:g} h"}


def _freshness(view: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Offline: the newest event in the offline table. Online: the newest event of the latest
    partition published to Redis (Dagster's online/<view>, else the registry's materialization)."""
    sla = _sla_hours(view)
    partitions = {p["date"]: p for p in view["offline"]["partitions"]}
    offline_newest = max((_parse(p["newest_event"]) for p in partitions.values() if p["newest_event"]), default=None)
    offline = _freshness_of(offline_newest, sla, now, "offline")

    published = [m["partition"] for m in view["dagster"]["online"]["partitions"] if m["partition"]] if view["dagster"] else []
    online_newest = None
    if published:
        latest = max(published)
        online_newest = _parse(partitions.get(latest, {}).get("newest_event"))
        if online_newest is None:  # partition no longer in the lake: its window end bounds it
            online_newest = _parse(f"{latest}T23:59:59.999999+00:00")
    elif view["materialization_intervals"]:
        ends = [_parse(i["end"]) for i in view["materialization_intervals"] if i["end"]]
        online_newest = min(max(ends), offline_newest) if ends and offline_newest else max(ends, default=None)
    online = _freshness_of(online_newest, sla, now, "online") if view["online"] else {"status": "n/a", "reason": "offline-only view"}

    checks = [c for c in view["checks"] if c["kind"] == "freshness"]
    failing_checks = [c for c in _latest_per_check(checks) if not c["passed"]]
    statuses = [offline["status"]] + ([online["status"]] if view["online"] else [])
    if "stale" in statuses or failing_checks:
        status = "stale"
    elif all(s == "fresh" for s in statuses):
        status = "fresh"
    else:
        status = "unknown"
    return {"status": status, "sla_hours": sla, "offline": offline, "online": online,
            "failing_checks": [c["check"] for c in failing_checks]}


def _check_kind(check: dict[str, Any]) -> str:
    return "freshness" if "fresh" in check["check"].lower() else "validation"


def _latest_per_check(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for check in checks:
        slot = (check["asset"], check["check"])
        if slot not in latest or check["timestamp"] > latest[slot]["timestamp"]:
            latest[slot] = check
    return sorted(latest.values(), key=lambda c: (c["asset"], c["check"]))


def _validation(view: dict[str, Any]) -> dict[str, Any]:
    """The latest result of each validation check (expectation suites and other non-freshness checks)."""
    latest = _latest_per_check([c for c in view["checks"] if c["kind"] == "validation"])
    failing = [c for c in latest if not c["passed"]]
    if not latest:
        status, summary = "none", "no validation results yet"
    elif any(c["severity"] == "ERROR" for c in failing):
        status, summary = "failing", f"{len(failing)} of {len(latest)} checks failing"
    elif failing:
        status, summary = "warning", f"{len(failing)} of {len(latest)} checks warning"
    else:
        status, summary = "passing", f"{len(latest)} checks passing"
    return {"status": status, "summary": summary, "latest": latest}


def _view_stats(view: dict[str, Any], offline_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    table_dir = offline_dir / view["name"]
    offline: dict[str, Any] = {"path": str(table_dir), "rows": 0, "partitions": [], "stats_seconds": None}
    if not has_partitions(table_dir):
        offline["error"] = f"no partitions under {table_dir}"
        return offline, {}
    try:
        stats = compute_table_stats(table_dir, [f["name"] for f in view["features"]],
                                    timestamp_column=view["source"]["timestamp_field"])
    except Exception as exc:  # one broken table must not take the catalog down
        offline["error"] = f"statistics failed: {type(exc).__name__}: {exc}"
        return offline, {}
    offline.update(rows=stats.rows, partitions=stats.partitions, stats_seconds=stats.seconds, columns=stats.columns)
    return offline, stats.features


def build_snapshot(
    settings: Settings,
    *,
    definitions: dict[str, Any] | None = None,
    instance: dg.DagsterInstance | None | object = _USE_SETTINGS,
    pipelines_dir: Path | None = None,
    now: datetime | None = None,
) -> CatalogSnapshot:
    """Build the snapshot. `definitions` defaults to feature_repo/ (+ registry); `instance` to the
    platform's Dagster instance at settings.dagster_home (None: no Dagster status)."""
    started = time.perf_counter()
    now = now or datetime.now(timezone.utc)
    errors: list[str] = []
    if definitions is None:
        from catalog.definitions import load_definitions

        definitions = load_definitions(settings)
    if instance is _USE_SETTINGS:
        from catalog.dagster_status import open_instance

        try:
            instance = open_instance(settings.dagster_home)
        except Exception as exc:
            errors.append(f"dagster instance {settings.dagster_home}: {type(exc).__name__}: {exc}")
            instance = None

    views = [dict(view) for view in definitions["feature_views"]]
    services = definitions["feature_services"]
    try:
        models = load_models(settings)
    except Exception as exc:  # an unreachable registry leaves the rest of the catalog intact
        errors.append(f"model registry: {type(exc).__name__}: {exc}")
        models = []

    status: dict[str, Any] = {}
    if instance is not None:
        from catalog.dagster_status import view_status

        try:
            status = view_status(instance, [view["name"] for view in views])
        except Exception as exc:
            errors.append(f"dagster status: {type(exc).__name__}: {exc}")

    all_stats: dict[str, dict[str, Any]] = {}
    for view in views:
        view["pipeline"] = windowed_pipeline_info(view) or pipeline_info(view["name"], pipelines_dir or settings.feature_repo_dir / VIEW_MODULES)
        view["assets"] = {"offline": f"features/{view['name']}", "online": f"online/{view['name']}"}
        view["dagster"] = status.get(view["name"])
        view["checks"] = [{**check, "kind": _check_kind(check)} for check in (view["dagster"] or {}).get("checks", [])]
        view["offline"], all_stats[view["name"]] = _view_stats(view, settings.offline_dir)
        view["freshness"] = _freshness(view, now)
        view["validation"] = _validation(view)
        view["feature_services"] = sorted(s["name"] for s in services if any(f["view"] == view["name"] for f in s["features"]))

    # Usage: a model uses a feature through its feature service, or by naming it in its manifest.
    service_features = {s["name"]: {(f["view"], f["feature"]) for f in s["features"]} for s in services}
    for model in models:
        named = {(f["view"], f["feature"]) for f in model.get("features", []) if f["view"]}
        model["uses"] = sorted(service_features.get(model.get("feature_service") or "", set()) | named)
    for service in services:
        service["models"] = sorted(m["name"] for m in models if m.get("feature_service") == service["name"])
        service["feature_views"] = sorted({f["view"] for f in service["features"]})

    monitoring = _monitoring(settings.state_dir, errors)
    drift_by_feature: dict[str, list[dict[str, Any]]] = {}
    for report in monitoring["drift"]:
        for drift in report["features"]:
            drift_by_feature.setdefault(f"{drift['view']}:{drift['feature']}", []).append(
                {**drift, "day": report["day"], "feature_service": report["feature_service"], "model_version": report["model_version"]})
    features = []
    for view in views:
        view_models = sorted({m["name"] for m in models if any(v == view["name"] for v, _ in m["uses"])})
        view["models"] = view_models
        for field in view["features"]:
            key = (view["name"], field["name"])
            features.append({
                "id": f"{view['name']}:{field['name']}",
                "name": field["name"],
                "view": view["name"],
                "dtype": field["dtype"],
                "description": field["description"],
                "tags": field["tags"],
                "view_description": view["description"],
                "view_tags": view["tags"],
                "owner": view["owner"],
                "entities": view["entities"],
                "join_keys": view["join_keys"],
                "freshness": view["freshness"]["status"],
                "validation": view["validation"]["status"],
                "feature_services": sorted(s["name"] for s in services if key in service_features[s["name"]]),
                "models": sorted(m["name"] for m in models if key in m["uses"]),
                "stats": all_stats[view["name"]].get(field["name"]),
                "drift": drift_by_feature.get(f"{view['name']}:{field['name']}", []),
            })
    for model in models:
        model["uses"] = [f"{v}:{f}" for v, f in model["uses"]]

    return CatalogSnapshot(**{
        "version": SNAPSHOT_VERSION,
        "generated_at": now.isoformat(),
        "project": settings.feast_project,
        "offline_profile": settings.offline_profile,
        "registry": definitions.get("registry"),
        "dagster_home": str(settings.dagster_home) if instance is not None else None,
        "entities": definitions["entities"],
        "feature_views": views,
        "feature_services": services,
        "features": features,
        "models": models,
        "lineage": build_lineage(views, services, models),
        "monitoring": monitoring,
        "errors": errors,
        "build_seconds": round(time.perf_counter() - started, 3),
    })


def write_snapshot(snapshot: CatalogSnapshot, directory: Path) -> Path:
    """Write catalog.json atomically (readers never see half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SNAPSHOT_FILE
    staging = path.with_suffix(".json.tmp")
    staging.write_text(json.dumps(snapshot, indent=1, default=str, allow_nan=False))
    staging.replace(path)
    return path


def _finite(value: Any) -> Any:
    """NaN (e.g. ROC AUC of a day without positives) as null: the snapshot is strict JSON."""
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _with_verdicts(report) -> dict[str, Any]:
    """The report as a dict, each result with its verdict (the reports' own rule: breached, degraded)."""
    import dataclasses

    data = dataclasses.asdict(report)
    for field, verdict in (("features", "breached"), ("models", "degraded"), ("views", "breached")):
        if field in data:
            for item, result in zip(data[field], getattr(report, field)):
                item[verdict] = getattr(result, verdict)
    return data


def _monitoring(state_dir: Path, errors: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The latest monitoring reports (the drift badge and plot on feature pages, the gauges of /metrics);
    a report beyond repair is an error on the page, not a failed build."""
    from core.monitoring import DriftReport, RealizedPerformanceReport, SkewReport, latest_reports

    monitoring: dict[str, list[dict[str, Any]]] = {}
    for kind, cls in (("drift", DriftReport), ("realized_performance", RealizedPerformanceReport), ("skew", SkewReport)):
        try:
            monitoring[kind] = [_finite(_with_verdicts(report)) for report in latest_reports(state_dir, cls)]
        except (OSError, ValueError) as exc:
            errors.append(f"monitoring {kind}: {type(exc).__name__}: {exc}")
            monitoring[kind] = []
    return monitoring


def read_snapshot(path: Path) -> CatalogSnapshot:
    snapshot = json.loads(path.read_text())
    if snapshot.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"{path}: catalog snapshot version {snapshot.get('version')!r}, expected {SNAPSHOT_VERSION} (rebuild it)")
    if missing := sorted(set(CatalogSnapshot.__annotations__) - set(snapshot)):
        raise ValueError(f"{path}: catalog snapshot lacks {missing} (rebuild it)")
    return snapshot


def publish(settings: Settings, **build_kwargs: Any) -> tuple[CatalogSnapshot, Path]:
    """Build the snapshot and write catalog.json plus the static HTML pages into <state>/catalog."""
    from catalog.render import export_static

    snapshot = build_snapshot(settings, **build_kwargs)
    directory = catalog_dir(settings)
    export_static(snapshot, directory)
    return snapshot, write_snapshot(snapshot, directory)
