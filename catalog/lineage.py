"""Lineage: raw table -> pipeline -> feature view -> feature service -> model, and who uses what.

The pipeline of a view is derived from its windowed features, or the `PIPELINE` of its module
feature_repo/feature_views/<view>.py; the raw tables it reads are that PIPELINE's `inputs`, read from
the module's source (no Spark import) and, only when not written as a literal there, by importing it.
Models are the model registry's (MLflow): each registered model's versions and aliases, and the
features its champion (else newest) version's ModelManifest names.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, TypedDict

from core.artifacts import ModelManifest
from core.feast_repo import VIEW_MODULES
from core.settings import Settings


def _literal_inputs(source: str) -> dict[str, int] | None:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PIPELINE" for t in node.targets):
            call = node.value
            if isinstance(call, ast.Call):
                for keyword in call.keywords:
                    if keyword.arg == "inputs":
                        try:
                            return dict(ast.literal_eval(keyword.value))
                        except ValueError:
                            return None
    return None


def windowed_pipeline_info(view: dict[str, Any]) -> dict[str, Any] | None:
    """{name, module, inputs, windows} of a view whose features are windowed aggregations (derived
    pipeline, core/windows.py); None for any other view."""
    from core.windows import TAG_WINDOW, VIEW_TAG_SOURCE, days_covering, parse_window

    source = view["tags"].get(VIEW_TAG_SOURCE)
    if not source:
        return None
    windows = {f["name"]: f["tags"][TAG_WINDOW] for f in view["features"] if TAG_WINDOW in f.get("tags", {})}
    largest = max((parse_window(w) for w in windows.values()), default=None)
    days_back = days_covering(largest) if largest else 0
    return {"name": "windowed", "module": "pipelines/windowed.py", "inputs": {source: days_back}, "windows": windows}


def pipeline_info(name: str, pipelines_dir: Path) -> dict[str, Any]:
    """{name, module, inputs: {raw_table: days_back}, error?} of the pipeline in <pipelines_dir>/<name>.py
    (a feature repo's feature_views/ folder: the module of view `name`)."""
    module = pipelines_dir / f"{name}.py"
    info: dict[str, Any] = {"name": name, "module": f"{pipelines_dir.name}/{name}.py", "inputs": {}}
    if not module.is_file():
        info["error"] = f"no module {info['module']}"
        return info
    inputs = _literal_inputs(module.read_text())
    if inputs is None and pipelines_dir.name == VIEW_MODULES:
        try:
            from pipelines.registry import view_pipeline

            inputs = dict(view_pipeline(pipelines_dir.parent, name).inputs)
        except Exception as exc:  # show the problem in the catalog rather than failing it
            info["error"] = f"{type(exc).__name__}: {exc}"
    info["inputs"] = {str(table): int(days) for table, days in (inputs or {}).items()}
    return info


class CatalogVersion(TypedDict):
    version: str
    aliases: list[str]
    created_ms: int
    run_id: str
    run_url: str  # the run on the MLflow tracking UI
    metrics: dict[str, float]  # the run's holdout metrics (test_*)
    gate_passed: bool | None  # None: no gate recorded


class CatalogModel(TypedDict, total=False):
    """A registered model as the catalog shows it: its versions and aliases, and the features of the
    version it describes (the champion, else the newest)."""

    name: str
    version: str  # the version described below
    promoted: bool  # whether it is the champion
    run_url: str
    feature_service: str | None
    features: list[dict[str, str]]  # [{view, feature}]
    feature_views: dict[str, str]  # view -> definition fingerprint it was trained on
    metrics: dict[str, float] | None
    versions: list[CatalogVersion]  # newest first
    uses: list[str]  # "view:feature", filled by the snapshot
    error: str


def _tracking_store_exists(tracking_uri: str) -> bool:
    """A sqlite store that was never written is no registry yet (and opening it would create it)."""
    return not tracking_uri.startswith("sqlite:///") or Path(tracking_uri.removeprefix("sqlite:///")).is_file()


def load_models(settings: Settings) -> list[CatalogModel]:
    """Every registered model of the tracking store with its versions, aliases and run links; the
    features are those of its champion (else newest) version's manifest. A version whose artifact
    cannot be read is listed with its error. mlflow is imported only when a store exists."""
    if not _tracking_store_exists(settings.tracking_uri):
        return []
    from core.model_registry import CHAMPION, ModelRegistry, run_url

    registry = ModelRegistry(settings.tracking_uri, settings.model_cache_dir)
    models: list[CatalogModel] = []
    for registered in sorted(registry.client.search_registered_models(), key=lambda m: m.name):
        versions = registry.versions(registered.name)
        if not versions:
            continue
        runs = {v.run_id: registry.client.get_run(v.run_id) for v in versions if v.run_id}
        listed: list[CatalogVersion] = [{
            "version": v.version, "aliases": list(v.aliases), "created_ms": v.created_ms, "run_id": v.run_id,
            "run_url": run_url(settings.mlflow_ui_url, runs[v.run_id].info.experiment_id, v.run_id) if v.run_id in runs else "",
            "metrics": {k: val for k, val in runs[v.run_id].data.metrics.items() if k.startswith("test_")} if v.run_id in runs else {},
            "gate_passed": {"true": True, "false": False}.get(v.tags.get("gate_passed", "")),
        } for v in versions]
        described = next((v for v in versions if CHAMPION in v.aliases), versions[0])
        entry = next(item for item in listed if item["version"] == described.version)
        record: CatalogModel = {"name": registered.name, "version": described.version, "promoted": CHAMPION in described.aliases,
                                "run_url": entry["run_url"], "feature_service": described.tags.get("feature_service"),
                                "features": [], "metrics": entry["metrics"] or None, "versions": listed}
        try:
            manifest = ModelManifest.read(registry.fetch(described).model_dir)
        except Exception as exc:  # show the problem in the catalog rather than failing it
            record["error"] = f"version {described.version}: {type(exc).__name__}: {exc}"
        else:
            record.update(
                feature_service=manifest.feature_service,
                features=[{"view": view, "feature": feature} for view, features in manifest.features_by_view.items() for feature in features],
                feature_views={view: pin.fingerprint for view, pin in manifest.feature_views.items()},
            )
        models.append(record)
    return models


def build_lineage(views: list[dict[str, Any]], services: list[dict[str, Any]], models: list[CatalogModel]) -> dict[str, Any]:
    """A graph of typed nodes ({id, kind, name}) and edges ({source, target}) in flow order."""
    nodes: dict[str, dict[str, str]] = {}
    edges: list[dict[str, str]] = []

    def node(kind: str, name: str) -> str:
        node_id = f"{kind}:{name}"
        nodes.setdefault(node_id, {"id": node_id, "kind": kind, "name": name})
        return node_id

    def edge(source: str, target: str) -> None:
        if {"source": source, "target": target} not in edges:
            edges.append({"source": source, "target": target})

    for view in views:
        view_id = node("feature_view", view["name"])
        pipeline = view.get("pipeline")
        if pipeline:
            pipeline_id = node("pipeline", pipeline["name"])
            for table in pipeline["inputs"]:
                edge(node("raw", table), pipeline_id)
            edge(pipeline_id, view_id)
    for service in services:
        service_id = node("feature_service", service["name"])
        for view_name in sorted({f["view"] for f in service["features"]}):
            edge(node("feature_view", view_name), service_id)
    for model in models:
        if model.get("error"):
            continue
        model_id = node("model", model["name"])
        if model.get("feature_service"):
            edge(node("feature_service", model["feature_service"]), model_id)
        else:
            for view_name in sorted({f["view"] for f in model.get("features", []) if f["view"]}):
                edge(node("feature_view", view_name), model_id)
    order = {"raw": 0, "pipeline": 1, "feature_view": 2, "feature_service": 3, "model": 4}
    return {"nodes": sorted(nodes.values(), key=lambda n: (order[n["kind"]], n["name"])), "edges": edges}
