"""The online serving endpoint: fetches the model's own features from Redis and scores transactions.

POST /predict   one transaction, or {"transactions": [...]} (up to max_request_rows candidates)
POST /features  the manifest's online features for {"entities": [...]}
GET  /healthz   the process is up;  GET /readyz  model loaded and Redis answering
GET  /metrics   Prometheus: latencies, batch sizes, Redis errors, model device, served feature ages, GPU use
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import numpy as np
import redis
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ValidationError

from core.redis_server import ensure_redis
from core.settings import Settings, load_settings
from eventlog.events import encode_record, epoch_micros
from eventlog.logs import open_event_log
from serving.batching import MicroBatcher, Overloaded
from serving.feature_log import ServedFeatureLog
from serving.gpu_metrics import GpuMetrics, GpuUnavailable
from serving.served_metrics import ServedFeatureMetrics
from onlinestore.online_reader import online_store_client
from serving.predictor import Predictor, resolve_model_dir
from serving.readiness import FeatureProbe
from serving.schemas import (
    FEATURES_RESPONSES,
    HEALTH_RESPONSES,
    METRICS_RESPONSES,
    PREDICT_RESPONSES,
    READY_RESPONSES,
    EntityBatch,
    Transaction,
    TransactionBatch,
    document_request_bodies,
    field_errors,
)
from training.features import request_inputs

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
log = logging.getLogger(__name__)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("featurestack_request_seconds", "Request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.request_rows = Histogram("featurestack_request_rows", "Rows per request", registry=self.registry,
                                      buckets=(1, 8, 64, 256, 1024, 4096))
        self.batch_rows = Histogram("featurestack_model_batch_rows", "Rows per model call (after micro-batching)",
                                    registry=self.registry, buckets=(1, 8, 32, 128, 512, 2048, 8192))
        self.redis_errors = Counter("featurestack_redis_errors_total", "Redis errors while fetching features", registry=self.registry)
        self.missing_entities = Counter("featurestack_missing_entity_rows_total",
                                        "Answered rows whose entity had no row of the view (its features missing)",
                                        ["endpoint", "view"], registry=self.registry)
        self.overloaded = Counter("featurestack_overloaded_total", "Requests refused because the queue was full", registry=self.registry)
        # The batcher's queue (rows queued or being scored): now, its high-water mark, and its bound.
        self.pending_rows = Gauge("featurestack_pending_rows", "Rows queued or being scored", registry=self.registry)
        self.pending_rows_peak = Gauge("featurestack_pending_rows_peak", "Most rows ever queued or being scored at once",
                                       registry=self.registry)
        self.pending_rows_limit = Gauge("featurestack_pending_rows_limit", "Queued rows beyond this are refused with 503",
                                        registry=self.registry)
        self.device = Gauge("featurestack_model_device_info", "Device the model runs on", ["device", "runtime", "model_version"],
                            registry=self.registry)


ENDPOINTS = ("/predict", "/features", "/healthz", "/readyz", "/metrics")


class LatencyMiddleware:
    """Request latency per endpoint, as plain ASGI (Starlette's BaseHTTPMiddleware costs more per request
    than the feature read of a single transaction)."""

    def __init__(self, app, histogram: Histogram):
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"  # bounded label values
            self.histogram.labels(endpoint=endpoint).observe(time.perf_counter() - started)


# Endpoints that need the API key (when one is configured); health, readiness and metrics stay open
# for probes and scrapers.
PROTECTED_PATHS = ("/predict", "/features")


class AccessGuard:
    """Bearer-token check (constant-time) and a request body size limit, as plain ASGI."""

    def __init__(self, app, api_key: str, max_body_bytes: int):
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else b""
        self.max_body_bytes = max_body_bytes

    @staticmethod
    async def _reply(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in PROTECTED_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected and not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            return await self._reply(send, 401, "missing or wrong API key (Authorization: Bearer <key>)",
                                     [(b"www-authenticate", b"Bearer")])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._reply(send, 413, f"request body of {int(declared)} bytes exceeds {self.max_body_bytes}")
        # Read the body here, bounded, whatever the client declared (chunked bodies declare nothing).
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                return await self._reply(send, 413, f"request body exceeds {self.max_body_bytes} bytes")
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _parse(model: type[BaseModel], payload: object, list_field: str | None = None, max_rows: int = 0) -> BaseModel:
    """Validate the body; errors are 422s whose `loc` names the offending field."""
    try:
        parsed = model.model_validate(payload)
    except ValidationError as error:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]) from None
    if list_field and len(getattr(parsed, list_field)) > max_rows:
        raise RequestValidationError([{
            "type": "too_long", "loc": ("body", list_field),
            "msg": f"{list_field}: at most {max_rows} rows per request, got {len(getattr(parsed, list_field))}",
        }])
    return parsed


async def _json(request: Request) -> object:
    """The body as JSON: only with Content-Type application/json (415 otherwise); unparsable or too
    deeply nested JSON is a 422 at `body`."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise HTTPException(415, f"Content-Type must be application/json, got {media_type or 'none'!r}")
    try:
        return await request.json()
    except ValueError as error:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": f"body is not JSON: {error}"}]) from None
    except RecursionError:
        raise RequestValidationError([{"type": "json_too_deep", "loc": ("body",),
                                       "msg": "body is not JSON this server reads: nested too deeply"}]) from None


def _open_monitoring(settings: Settings, predictor: Predictor, registry: CollectorRegistry) \
        -> tuple[ServedFeatureMetrics, GpuMetrics | None, ServedFeatureLog | None]:
    """What serving reports about itself: served-feature metrics, GPU use (None without a GPU) and the
    served-feature log (None when switched off)."""
    serving = settings.serving
    served_metrics = ServedFeatureMetrics(registry, serving.gpu_hourly_price_usd)
    try:
        gpu_metrics = GpuMetrics.open(registry)
    except GpuUnavailable as why:
        log.info("no GPU metrics: %s", why)
        gpu_metrics = None
    feature_log = ServedFeatureLog(
        settings.offline_dir, predictor.manifest.feature_service, predictor.reader.join_keys, predictor.reader.feature_refs,
        predictor.manifest.request_features, registry, serving.served_log_buffer_rows, serving.served_log_flush_rows,
        serving.served_log_flush_interval_s) if serving.served_log else None
    return served_metrics, gpu_metrics, feature_log


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    serving = settings.serving
    metrics = Metrics()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        # A configured REDIS_URL is used as is: if it is down the server still starts, /readyz says 503
        # until it answers. Without one, the local discovery (127.0.0.1:6379 or our own redis-server).
        url = settings.redis_url or ensure_redis("", settings.state_dir).url
        client = online_store_client(url, serving.redis_timeout_s, settings.redis_type)
        predictor = Predictor(resolve_model_dir(settings), client, serving.device, settings.feast_project)
        metrics.device.labels(device=predictor.device, runtime=predictor.runner.runtime, model_version=predictor.version).set(1)

        views = predictor.reader.views
        served_metrics, gpu_metrics, feature_log = _open_monitoring(settings, predictor, metrics.registry)

        def score(user_ids, merchant_ids, amounts, as_of_nanos, request_ids, txn_ids, event_micros):
            scored = predictor.predict(user_ids, merchant_ids, amounts, as_of_nanos)
            missing = scored.features.missing_entity
            count_missing("/predict", missing)
            served_metrics.observe(scored.features)
            if feature_log is not None:
                feature_log.record(request_ids=request_ids, txn_ids=txn_ids, event_micros=event_micros,
                                   entities={"user_id": user_ids, "merchant_id": merchant_ids}, features=scored.features.values,
                                   request_features=request_inputs(scored.inputs), scores=scored.scores,
                                   model_name=predictor.manifest.model, model_version=predictor.version)
            any_missing = missing.any(axis=1).tolist()
            missing_rows = missing.tolist()
            # (prediction, the row's feature values): the handler builds the features only when asked.
            return [
                ({"fraud_probability": probability, "missing_features": flag,
                  "missing_views": [view for view, gone in zip(views, row) if gone] if flag else []}, served)
                for probability, flag, row, served in zip(scored.scores.astype(np.float64).tolist(), any_missing, missing_rows,
                                                          scored.features.values.tolist())
            ]

        batcher = MicroBatcher(score, serving.max_batch_rows, serving.max_wait_ms, serving.max_pending_rows,
                               on_batch=metrics.batch_rows.observe)
        batcher.start()
        metrics.pending_rows.set_function(lambda: batcher.pending_rows)
        metrics.pending_rows_peak.set_function(lambda: batcher.peak_pending_rows)
        metrics.pending_rows_limit.set(batcher.max_pending_rows)
        probe = FeatureProbe(client, settings.feast_project, views)
        # Scored transactions feed the stream processor (featurestack stream), which keeps the windowed
        # features fresh: the log is partitioned by the user, the entity of those windows.
        event_log = open_event_log(settings.stream, client, settings.feast_project, "transactions", "user_id") \
            if settings.stream.publish_scored else None
        state.update(client=client, predictor=predictor, batcher=batcher, probe=probe, event_log=event_log)
        try:
            yield
        finally:
            await batcher.stop()
            if feature_log is not None:
                await asyncio.to_thread(feature_log.close)  # writes what is buffered
            served_metrics.close()
            if gpu_metrics is not None:
                gpu_metrics.close()
            if event_log is not None:
                await asyncio.to_thread(event_log.close)
            client.close()

    def count_missing(endpoint: str, missing_entity: np.ndarray) -> None:
        for view, rows in zip(state["predictor"].reader.views, missing_entity.sum(axis=0).tolist()):
            if rows:
                metrics.missing_entities.labels(endpoint=endpoint, view=view).inc(rows)

    # /docs and /redoc from assets shipped with fastapi-offline: they render without internet.
    app = FastAPIOffline(title="featurestack serving", lifespan=lifespan,
                         description="Fraud scoring on the online store's features. Bodies are JSON "
                                     "(Content-Type: application/json); numbers are strict JSON numbers.")
    document_request_bodies(app, serving.max_request_rows)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": field_errors(list(error.errors()))})

    @app.exception_handler(redis.RedisError)
    async def redis_unavailable(_request: Request, error: redis.RedisError) -> JSONResponse:
        metrics.redis_errors.inc()
        return JSONResponse(status_code=503, content={"detail": f"online store unavailable: {type(error).__name__}: {error}"},
                            headers={"Retry-After": "1"})

    @app.exception_handler(Overloaded)
    async def overloaded(_request: Request, error: Overloaded) -> JSONResponse:
        metrics.overloaded.inc()
        return JSONResponse(status_code=503, content={"detail": f"overloaded: {error}"}, headers={"Retry-After": "1"})

    app.add_middleware(AccessGuard, api_key=serving.api_key, max_body_bytes=serving.max_body_bytes)
    app.add_middleware(LatencyMiddleware, histogram=metrics.latency)

    @app.post("/predict", response_model=None, responses=PREDICT_RESPONSES)
    async def predict(request: Request, include_features: bool = False) -> JSONResponse:
        """Score one transaction, or a batch as {"transactions": [...]}; `include_features`: also return
        each feature vector as served."""
        payload = await _json(request)
        if isinstance(payload, dict) and "transactions" in payload:
            transactions = _parse(TransactionBatch, payload, "transactions", serving.max_request_rows).transactions
        else:
            transactions = [_parse(Transaction, payload)]
        metrics.request_rows.observe(len(transactions))
        now = datetime.now(timezone.utc)
        times = [t.event_timestamp or now for t in transactions]
        event_micros = np.fromiter((epoch_micros(time_) for time_ in times), np.int64, len(transactions))
        request_id = uuid.uuid4().hex
        columns = (
            np.fromiter((t.user_id for t in transactions), np.int64, len(transactions)),
            np.fromiter((t.merchant_id for t in transactions), np.int64, len(transactions)),
            np.fromiter((t.amount for t in transactions), np.float64, len(transactions)),
            # As of one microsecond before the transaction: the training set's entity timestamp (epoch
            # nanoseconds, clamped to int64: any valid date is accepted).
            np.fromiter((min(max(micros * 1000 - 1000, INT64_MIN), INT64_MAX) for micros in event_micros.tolist()),
                        np.int64, len(transactions)),
            # For the served-feature log: the request, the client's transaction ids, the transactions' instants.
            np.full(len(transactions), request_id, dtype=object),
            np.array([t.txn_id for t in transactions], dtype=object),
            event_micros,
        )
        scored = await state["batcher"].submit(*columns)
        if include_features:  # NaN (a null value or a missing entity) is JSON null
            names = state["predictor"].reader.feature_refs
            predictions = [{**p, "features": {n: None if v != v else v for n, v in zip(names, served)}} for p, served in scored]
        else:
            predictions = [p for p, _ in scored]
        if state["event_log"] is not None:
            records = [encode_record({"txn_id": t.txn_id or uuid.uuid4().hex, "user_id": t.user_id, "merchant_id": t.merchant_id,
                                      "amount": t.amount, "event_timestamp": time_}) for t, time_ in zip(transactions, times)]
            await asyncio.to_thread(state["event_log"].append, records)
        # Plain JSON types already: skip FastAPI's jsonable_encoder (5 ms per 1000 rows).
        return JSONResponse({"model_version": state["predictor"].version, "predictions": predictions},
                            headers={"X-Request-ID": request_id})

    @app.post("/features", response_model=None, responses=FEATURES_RESPONSES)
    async def features(request: Request) -> JSONResponse:
        """The model's online features for each entity."""
        entities = _parse(EntityBatch, await _json(request), "entities", serving.max_request_rows).entities
        predictor: Predictor = state["predictor"]
        result = await asyncio.to_thread(predictor.features, {
            "user_id": np.array([e.user_id for e in entities], np.int64),
            "merchant_id": np.array([e.merchant_id for e in entities], np.int64),
        }, time.time_ns())
        count_missing("/features", result.missing_entity)
        values = result.values.astype(object)
        values[np.isnan(result.values)] = None  # a null value or a missing entity
        return JSONResponse({
            "feature_refs": result.names,
            "rows": [
                {"features": dict(zip(result.names, row)), "missing_views": [v for v, gone in zip(result.views, missing) if gone]}
                for row, missing in zip(values.tolist(), result.missing_entity.tolist())
            ],
        })

    @app.get("/healthz", response_model=None, responses=HEALTH_RESPONSES)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", response_model=None, responses=READY_RESPONSES)
    async def readyz() -> JSONResponse:
        if "predictor" not in state:
            return JSONResponse(status_code=503, content={"status": "loading", "detail": "the model is loading"})
        try:
            holds_features = await asyncio.to_thread(state["probe"].holds_features)
        except redis.RedisError as error:
            metrics.redis_errors.inc()
            return JSONResponse(status_code=503, content={"status": "online_store_unavailable",
                                                          "detail": f"{type(error).__name__}: {error}"})
        if not holds_features:
            return JSONResponse(status_code=503, content={"status": "no_features", "detail": state["probe"].describe_absence()})
        return JSONResponse(content={"status": "ready", "model_version": state["predictor"].version,
                                     "device": state["predictor"].device,
                                     "runtime": state["predictor"].runner.runtime})

    @app.get("/metrics", response_model=None, response_class=PlainTextResponse, responses=METRICS_RESPONSES)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
