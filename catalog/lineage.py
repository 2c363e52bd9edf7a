"""Lineage: raw table -> pipeline -> feature view -> feature service -> model, and who uses what.

The pipeline of a view is derived from its windowed features, or the `PIPELINE` of its module
feature_repo/feature_views/<view>.py; the raw tables it reads are that PIPELINE's `inputs`, read from
the module's source (no Spark import) and, only when not written as a literal there, by importing it.
Models are the promoted (else newest) model of each feature service, read as the ModelManifest training writes.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, TypedDict

from core.artifacts import MANIFEST_FILE, ModelManifest, latest_promoted
from core.feast_repo import VIEW_MODULES


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


class CatalogModel(TypedDict, total=False):
    """A model as the catalog shows it."""

    name: str
    version: str
    path: str
    promoted: bool
    feature_service: str | None
    features: list[dict[str, str]]  # [{view, feature}]
    feature_views: dict[str, str]  # view -> definition fingerprint it was trained on
    metrics: dict[str, float] | None
    uses: list[str]  # "view:feature", filled by the snapshot
    error: str


def load_models(models_dir: Path) -> list[CatalogModel]:
    """The promoted model of each feature service under models_dir, else its newest version (not
    promoted); an unreadable manifest is listed with its error."""
    models: list[CatalogModel] = []
    for service_dir in sorted(p for p in models_dir.iterdir() if p.is_dir()) if models_dir.is_dir() else []:
        promoted = latest_promoted(models_dir, service_dir.name)
        versions = sorted(p for p in service_dir.iterdir() if (p / MANIFEST_FILE).is_file())
        model_dir = promoted or (versions[-1] if versions else None)
        if model_dir is None:
            continue
        record: CatalogModel = {"name": service_dir.name, "version": model_dir.name, "path": str(model_dir / MANIFEST_FILE),
                                "promoted": promoted is not None, "feature_service": None, "features": []}
        try:
            manifest = ModelManifest.read(model_dir)
        except ValueError as exc:
            record["error"] = str(exc)
        else:
            record.update(
                name=manifest.model,
                feature_service=manifest.feature_service,
                features=[{"view": view, "feature": feature} for view, features in manifest.features_by_view.items() for feature in features],
                feature_views={view: pin.fingerprint for view, pin in manifest.feature_views.items()},
                metrics=manifest.training.metrics if manifest.training else None,
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
