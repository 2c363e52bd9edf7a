"""Lineage: raw table -> pipeline -> feature view -> feature service -> model, and who uses what.

The pipeline of a view is its Feast tag `pipeline`; the raw tables it reads are the `inputs` of
`PIPELINE` in pipelines/<name>.py, read from the module's source (no Spark import) and, only when
not written as a literal there, by importing the module. Models are the manifests training writes
under <state>/models/*/manifest.json (keys `feature_service` and `features`).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from featurestack.settings import PROJECT_ROOT

PIPELINES_DIR = PROJECT_ROOT / "pipelines"


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
    pipeline, featurestack/windows.py); None for any other view."""
    from featurestack.windows import TAG_WINDOW, VIEW_TAG_SOURCE, days_covering, parse_window

    source = view["tags"].get(VIEW_TAG_SOURCE)
    if not source:
        return None
    windows = {f["name"]: f["tags"][TAG_WINDOW] for f in view["features"] if TAG_WINDOW in f.get("tags", {})}
    largest = max((parse_window(w) for w in windows.values()), default=None)
    days_back = days_covering(largest) if largest else 0
    return {"name": "windowed", "module": "pipelines/windowed.py", "inputs": {source: days_back}, "windows": windows}


def pipeline_info(name: str | None, pipelines_dir: Path = PIPELINES_DIR) -> dict[str, Any] | None:
    """{name, module, inputs: {raw_table: days_back}, error?} of pipelines/<name>.py."""
    if not name:
        return None
    module = pipelines_dir / f"{name}.py"
    info: dict[str, Any] = {"name": name, "module": f"{pipelines_dir.name}/{name}.py", "inputs": {}}
    if not module.is_file():
        info["error"] = f"no module {info['module']}"
        return info
    inputs = _literal_inputs(module.read_text())
    if inputs is None and pipelines_dir == PIPELINES_DIR:
        try:
            from pipelines.registry import load_pipeline

            inputs = dict(load_pipeline(name).inputs)
        except Exception as exc:  # show the problem in the catalog rather than failing it
            info["error"] = f"{type(exc).__name__}: {exc}"
    info["inputs"] = {str(table): int(days) for table, days in (inputs or {}).items()}
    return info


def _manifest_features(raw: Any) -> list[dict[str, str]]:
    """Manifest features as [{view, feature}]: accepts 'view:feature' strings, {view: [features]} and
    [{view|feature_view, feature|name}] records."""
    features: list[dict[str, str]] = []
    if isinstance(raw, dict):
        for view, names in raw.items():
            features += [{"view": str(view), "feature": str(n)} for n in (names if isinstance(names, list) else [names])]
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, str):
                separator = ":" if ":" in item else "__"  # Feast's reference or full feature name
                view, sep, feature = item.partition(separator)
                features.append({"view": view, "feature": feature} if sep else {"view": "", "feature": item})
            elif isinstance(item, dict):
                view = item.get("view") or item.get("feature_view") or ""
                feature = item.get("feature") or item.get("name") or ""
                features.append({"view": str(view), "feature": str(feature)})
    return features


def load_models(models_dir: Path) -> list[dict[str, Any]]:
    """Every readable model manifest under models_dir/*/manifest.json (unreadable ones with an error)."""
    models = []
    for path in sorted(models_dir.glob("*/manifest.json")) if models_dir.is_dir() else []:
        record: dict[str, Any] = {"name": path.parent.name, "path": str(path)}
        try:
            manifest = json.loads(path.read_text())
            record.update(
                name=str(manifest.get("name") or manifest.get("model") or path.parent.name),
                feature_service=manifest.get("feature_service"),
                features=_manifest_features(manifest.get("features")),
                feature_view_versions=manifest.get("feature_view_versions") or manifest.get("feature_views"),
                created_at=manifest.get("created_at") or manifest.get("trained_at"),
                metrics=manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else None,
            )
            if isinstance(record["feature_service"], dict):
                record["feature_service"] = record["feature_service"].get("name")
        except (OSError, ValueError, AttributeError) as exc:
            record["error"] = f"unreadable manifest: {exc}"
            record.setdefault("features", [])
        models.append(record)
    return models


def build_lineage(views: list[dict[str, Any]], services: list[dict[str, Any]], models: list[dict[str, Any]]) -> dict[str, Any]:
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
