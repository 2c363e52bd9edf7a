"""The online serving endpoint: fetches the model's own features from Redis and scores transactions.

POST /predict   one transaction, or {"transactions": [...]} (up to max_request_rows candidates)
POST /features  the manifest's online features for {"entities": [...]}
GET  /healthz   the process is up;  GET /readyz  model loaded and Redis answering
GET  /metrics   Prometheus: latencies, batch sizes, Redis errors, model device
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Annotated

import numpy as np
import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from featurestack.redis_server import ensure_redis
from featurestack.settings import Settings, load_settings
from serving.batching import MicroBatcher, Overloaded
from serving.predictor import Predictor, resolve_model_dir

PositiveAmount = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Transaction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: StrictInt
    merchant_id: StrictInt
    amount: PositiveAmount


class TransactionBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transactions: list[Transaction] = Field(min_length=1)


class Entity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: StrictInt
    merchant_id: StrictInt


class EntityBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entities: list[Entity] = Field(min_length=1)


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
        self.overloaded = Counter("featurestack_overloaded_total", "Requests refused because the queue was full", registry=self.registry)
        self.device = Gauge("featurestack_model_device_info", "Device the model runs on", ["device", "model_version"], registry=self.registry)


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
    try:
        return await request.json()
    except ValueError as error:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": f"body is not JSON: {error}"}]) from None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    serving = settings.serving
    metrics = Metrics()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        url = ensure_redis(settings.redis_url, settings.state_dir).url
        client = redis.Redis.from_url(url, socket_timeout=serving.redis_timeout_s, socket_connect_timeout=serving.redis_timeout_s)
        predictor = Predictor(resolve_model_dir(settings), client)
        metrics.device.labels(device=str(predictor.device), model_version=predictor.version).set(1)

        def score(user_ids, merchant_ids, amounts):
            scored = predictor.predict(user_ids, merchant_ids, amounts)
            missing = scored.features.missing_entity
            return [
                {"fraud_probability": float(p), "missing_features": bool(m.any()),
                 "missing_views": [v for v, flag in zip(scored.features.views, m) if flag]}
                for p, m in zip(scored.scores, missing)
            ]

        batcher = MicroBatcher(score, serving.max_batch_rows, serving.max_wait_ms, serving.max_pending_rows,
                               on_batch=metrics.batch_rows.observe)
        batcher.start()
        state.update(client=client, predictor=predictor, batcher=batcher)
        try:
            yield
        finally:
            await batcher.stop()
            client.close()

    app = FastAPI(title="featurestack serving", lifespan=lifespan)

    @app.exception_handler(redis.RedisError)
    async def redis_unavailable(_request: Request, error: redis.RedisError) -> JSONResponse:
        metrics.redis_errors.inc()
        return JSONResponse(status_code=503, content={"detail": f"online store unavailable: {type(error).__name__}: {error}"},
                            headers={"Retry-After": "1"})

    @app.exception_handler(Overloaded)
    async def overloaded(_request: Request, error: Overloaded) -> JSONResponse:
        metrics.overloaded.inc()
        return JSONResponse(status_code=503, content={"detail": f"overloaded: {error}"}, headers={"Retry-After": "1"})

    @app.middleware("http")
    async def observe_latency(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        metrics.latency.labels(endpoint=request.url.path).observe(time.perf_counter() - started)
        return response

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        payload = await _json(request)
        if isinstance(payload, dict) and "transactions" in payload:
            transactions = _parse(TransactionBatch, payload, "transactions", serving.max_request_rows).transactions
        else:
            transactions = [_parse(Transaction, payload)]
        metrics.request_rows.observe(len(transactions))
        columns = (
            np.fromiter((t.user_id for t in transactions), np.int64, len(transactions)),
            np.fromiter((t.merchant_id for t in transactions), np.int64, len(transactions)),
            np.fromiter((t.amount for t in transactions), np.float64, len(transactions)),
        )
        predictions = await state["batcher"].submit(*columns)
        return {"model_version": state["predictor"].version, "predictions": predictions}

    @app.post("/features")
    async def features(request: Request) -> dict:
        entities = _parse(EntityBatch, await _json(request), "entities", serving.max_request_rows).entities
        predictor: Predictor = state["predictor"]
        result = await asyncio.to_thread(predictor.features, {
            "user_id": np.array([e.user_id for e in entities], np.int64),
            "merchant_id": np.array([e.merchant_id for e in entities], np.int64),
        })
        return {
            "feature_refs": result.names,
            "rows": [
                {"features": {name: (None if np.isnan(value) else float(value)) for name, value in zip(result.names, row)},
                 "missing_views": [v for v, flag in zip(result.views, missing) if flag]}
                for row, missing in zip(result.values, result.missing_entity)
            ],
        }

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if "predictor" not in state:
            return JSONResponse(status_code=503, content={"status": "loading"})
        await asyncio.to_thread(state["client"].ping)  # a RedisError becomes a 503
        return JSONResponse(content={"status": "ready", "model_version": state["predictor"].version,
                                     "device": str(state["predictor"].device)})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
