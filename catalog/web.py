"""The catalog web app (FastAPI): HTML pages and a JSON API over one in-memory snapshot.

Requests never import Feast or scan parquet: the snapshot is built once (at start, or on demand by
POST /api/refresh, which rebuilds in a background thread and swaps it in when done), and a newer
snapshot file written meanwhile (the Dagster `catalog` asset, refreshed by a sensor after runs) is
picked up by the next request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from catalog import render
from catalog.search import matches_all_words, rank_features, service_search_text, view_search_text
from catalog.snapshot import read_snapshot

LINKS = render.Links()


class CatalogState:
    """The snapshot being served, and how to rebuild it (None: a fixed snapshot)."""

    def __init__(self, snapshot: dict[str, Any], rebuild: Callable[[], dict[str, Any]] | None = None, follow: Path | None = None):
        self.snapshot = snapshot
        self._rebuild = rebuild
        self._lock = threading.Lock()
        self.refreshing = False
        self.last_error: str | None = None
        self._follow = follow  # the snapshot file: served anew whenever it changes
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._follow.stat() if self._follow is not None else None
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size) if stat else None

    def current(self) -> dict[str, Any]:
        """The snapshot, reloaded first when the followed file changed (one stat per request)."""
        stamp = self._stamp()
        if stamp is not None and stamp != self._seen:
            try:
                self.snapshot = read_snapshot(self._follow)
            except (OSError, ValueError) as exc:  # keep serving the previous snapshot
                self.last_error = f"{type(exc).__name__}: {exc}"
            self._seen = stamp
        return self.snapshot

    def refresh_in_background(self) -> bool:
        if self._rebuild is None:
            return False
        with self._lock:
            if self.refreshing:
                return True
            self.refreshing = True

        def work() -> None:
            try:
                self.snapshot = self._rebuild()
                self.last_error = None
            except Exception as exc:  # keep serving the previous snapshot
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.refreshing = False

        threading.Thread(target=work, name="catalog-refresh", daemon=True).start()
        return True


def _feature_summary(feature: dict[str, Any], with_histogram: bool = False) -> dict[str, Any]:
    stats = dict(feature.get("stats") or {})
    if not with_histogram:
        stats.pop("histogram", None)
    return {**feature, "stats": stats, "feast_reference": feature["id"], "url": LINKS.feature(feature["view"], feature["name"])}


def _not_found(kind: str, name: str, known: list[str]) -> HTTPException:
    return HTTPException(status_code=404, detail=f"no {kind} {name!r}; known: {', '.join(sorted(known)) or 'none'}")


def create_app(state: CatalogState) -> FastAPI:
    app = FastAPI(title="featurestack catalog", docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)

    def snap() -> dict[str, Any]:
        return state.current()

    def views() -> dict[str, dict[str, Any]]:
        return {view["name"]: view for view in snap()["feature_views"]}

    # ------------------------------------------------------------------ HTML
    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return render.render_index(snap(), LINKS)

    @app.get("/views/{name}", response_class=HTMLResponse)
    def view_page(name: str) -> str:
        html = render.render_view(snap(), name, LINKS)
        if html is None:
            raise _not_found("feature view", name, list(views()))
        return html

    @app.get("/features/{view}/{name}", response_class=HTMLResponse)
    def feature_page(view: str, name: str) -> str:
        html = render.render_feature(snap(), view, name, LINKS)
        if html is None:
            raise _not_found("feature", f"{view}:{name}", [f["id"] for f in snap()["features"]])
        return html

    @app.get("/services/{name}", response_class=HTMLResponse)
    def service_page(name: str) -> str:
        html = render.render_service(snap(), name, LINKS)
        if html is None:
            raise _not_found("feature service", name, [s["name"] for s in snap()["feature_services"]])
        return html

    @app.get("/models/{name}", response_class=HTMLResponse)
    def model_page(name: str) -> str:
        html = render.render_model(snap(), name, LINKS)
        if html is None:
            raise _not_found("model", name, [m["name"] for m in snap()["models"]])
        return html

    @app.get("/lineage", response_class=HTMLResponse)
    def lineage_page() -> str:
        return render.render_lineage(snap(), LINKS)

    # ------------------------------------------------------------------ JSON
    @app.get("/api/features")
    def api_features(
        q: str = Query("", description="words that must all match (name, description, view, tag, owner, entity); ranked in that order, with `matched` saying where"),
        view: str | None = None, service: str | None = None, histogram: bool = False,
    ) -> list[dict[str, Any]]:
        matches = rank_features(snap()["features"], q)
        if view:
            matches = [m for m in matches if m.feature["view"] == view]
        if service:
            matches = [m for m in matches if service in m.feature["feature_services"]]
        return [_feature_summary(m.feature, histogram) | ({"matched": list(m.reasons)} if q.strip() else {}) for m in matches]

    @app.get("/api/features/{view}/{name}")
    def api_feature(view: str, name: str) -> dict[str, Any]:
        feature = next((f for f in snap()["features"] if f["view"] == view and f["name"] == name), None)
        if feature is None:
            raise _not_found("feature", f"{view}:{name}", [f["id"] for f in snap()["features"]])
        return _feature_summary(feature, with_histogram=True)

    @app.get("/api/feature-views")
    def api_views(q: str = Query("", description="words that must all match name, description, owner, entity, tag or feature")) -> list[dict[str, Any]]:
        return [
            {key: view[key] for key in ("name", "description", "owner", "entities", "join_keys", "tags", "feature_services", "models")}
            | {"features": [f["name"] for f in view["features"]], "freshness": view["freshness"]["status"],
               "validation": view["validation"]["status"], "rows": view["offline"]["rows"]}
            for view in snap()["feature_views"] if matches_all_words(view_search_text(view), q)
        ]

    @app.get("/api/feature-views/{name}")
    def api_view(name: str) -> dict[str, Any]:
        view = views().get(name)
        if view is None:
            raise _not_found("feature view", name, list(views()))
        features = {f["name"]: f for f in snap()["features"] if f["view"] == name}
        return {**view, "features": [{**field, "stats": features[field["name"]].get("stats")} for field in view["features"]]}

    @app.get("/api/feature-services")
    def api_services(q: str = Query("", description="words that must all match name, description, owner, view, feature or model")) -> list[dict[str, Any]]:
        return [{"name": s["name"], "description": s["description"], "owner": s["owner"], "feature_views": s["feature_views"],
                 "models": s["models"], "feature_count": len(s["features"])}
                for s in snap()["feature_services"] if matches_all_words(service_search_text(s), q)]

    @app.get("/api/feature-services/{name}")
    def api_service(name: str) -> dict[str, Any]:
        service = next((s for s in snap()["feature_services"] if s["name"] == name), None)
        if service is None:
            raise _not_found("feature service", name, [s["name"] for s in snap()["feature_services"]])
        by_id = {f["id"]: f for f in snap()["features"]}
        refs = [f"{f['view']}:{f['feature']}" for f in service["features"]]
        return {
            **service,
            "feature_refs": refs,  # ready for FeatureStore.get_historical_features(features=...)
            "join_keys": sorted({key for ref in refs if ref in by_id for key in by_id[ref]["join_keys"]}),
            "features": [_feature_summary(by_id[ref]) if ref in by_id else {"id": ref, "missing": True} for ref in refs],
            "views": [{"name": v, "freshness": views()[v]["freshness"]["status"], "validation": views()[v]["validation"]["status"]}
                      for v in service["feature_views"] if v in views()],
        }

    @app.get("/api/lineage")
    def api_lineage() -> dict[str, Any]:
        return snap()["lineage"]

    @app.get("/api/models")
    def api_models() -> list[dict[str, Any]]:
        return snap()["models"]

    @app.get("/api/models/{name}")
    def api_model(name: str) -> dict[str, Any]:
        found = next((m for m in snap()["models"] if m["name"] == name), None)
        if found is None:
            raise _not_found("model", name, [m["name"] for m in snap()["models"]])
        return found

    @app.get("/api/snapshot")
    def api_snapshot() -> dict[str, Any]:
        return snap()

    @app.post("/api/refresh")
    def api_refresh() -> JSONResponse:
        started = state.refresh_in_background()
        if not started:
            return JSONResponse({"refreshing": False, "detail": "this server serves a fixed snapshot file"}, status_code=409)
        return JSONResponse({"refreshing": True}, status_code=202)

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        """The monitoring gauges (drift, realized performance, skew) of the latest reports, for Prometheus."""
        from prometheus_client import CONTENT_TYPE_LATEST

        from catalog.metrics import monitoring_metrics

        return Response(monitoring_metrics(snap()), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "generated_at": snap()["generated_at"], "refreshing": state.refreshing, "last_error": state.last_error}

    return app


def serve(state: CatalogState, host: str = "127.0.0.1", port: int = 8080) -> None:
    from core.shutdown import serve_http

    serve_http(create_app(state), host=host, port=port, log_level="info")
