"""The serving API's request and response models and the OpenAPI documentation built from them.

Requests are validated strictly: ids are JSON integers in INT64 range, amounts JSON numbers (never
strings), finite and within the raw input contract's range. Every status code and content type an
endpoint can answer is documented here, so /openapi.json describes what the server really does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, create_model

from pipelines.contracts import MAX_AMOUNT


def _integral_number(value: Any) -> Any:
    """JSON (and JSON Schema's `integer`) does not tell 7 from 7.0: an integral number is an id.
    Fractions, booleans, strings and NaN stay wrong."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _date_time_text(value: Any) -> Any:
    """A date-time is a JSON string (RFC 3339), as the schema says: pydantic would read a number as epoch
    seconds or milliseconds, a guess about the sender's unit."""
    if isinstance(value, (int, float)):
        raise ValueError("must be a date-time string (RFC 3339, with a time zone), not a number")
    return value


EntityId = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1, description="Feast INT64 join key", examples=[42]),
                     BeforeValidator(_integral_number)]
Amount = Annotated[float, Field(strict=True, gt=0, le=MAX_AMOUNT, allow_inf_nan=False,
                                description=f"Transaction amount: a JSON number, 0 < amount <= {MAX_AMOUNT:g}", examples=[12.5])]


EntityInt32 = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1, description="Feast INT32 join key", examples=[42]),
                        BeforeValidator(_integral_number)]
EntityText = Annotated[StrictStr, Field(min_length=1, max_length=256, description="Feast STRING join key", examples=["id-42"])]
ENTITY_FIELDS = {"int64": EntityId, "int32": EntityInt32, "string": EntityText}
TxnId = Annotated[str, Field(min_length=1, max_length=128, description=(
    "The transaction's id: with event publishing on, the transaction is appended to the event log under it after "
    "scoring (a retried request is applied once). Default: a new id."))]
EventTimestamp = Annotated[AwareDatetime, Field(description=(
    "When the transaction happened (with a time zone): features are read as of just before it, values older than "
    "their view's TTL count as missing, as in training. Default: now.")), BeforeValidator(_date_time_text)]


@dataclass(frozen=True)
class RequestModels:
    """The request bodies of a model whose feature views are keyed by `entity_keys`: a transaction
    carries one field per entity key (user_id and merchant_id for fraud_detection_v1), typed as the
    key, and nothing the model does not take."""

    entity_keys: tuple[tuple[str, str], ...]
    transaction: type[BaseModel]
    transaction_batch: type[BaseModel]
    entity: type[BaseModel]
    entity_batch: type[BaseModel]


def request_models(entity_keys: tuple[tuple[str, str], ...]) -> RequestModels:
    unsupported = [f"{name} ({value_type})" for name, value_type in entity_keys if value_type not in ENTITY_FIELDS]
    if unsupported:
        raise ValueError(f"join keys of a type serving does not take: {unsupported}")
    fields = {name: (ENTITY_FIELDS[value_type], ...) for name, value_type in entity_keys}
    sample = {name: (f"id-{n}" if value_type == "string" else n) for (name, value_type), n in zip(entity_keys, (42, 7, 3, 11, 5, 9))}
    other = {name: (f"id-{n}" if value_type == "string" else n) for (name, value_type), n in zip(entity_keys, (43, 9, 4, 12, 6, 10))}
    transaction = create_model(
        "Transaction", __doc__="One transaction to score.",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {**sample, "amount": 12.5},
            {**sample, "amount": 12.5, "txn_id": "t-981", "event_timestamp": "2026-11-30T12:00:00.000001Z"}]}),
        **fields, amount=(Amount, ...), txn_id=(TxnId | None, None), event_timestamp=(EventTimestamp | None, None))
    transaction_batch = create_model(
        "TransactionBatch", __doc__="Several transactions scored in one request (at most the server's max_request_rows).",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [{"transactions": [
            {**sample, "amount": 12.5}, {**other, "amount": 250.0}]}]}),
        transactions=(list[transaction], Field(min_length=1)))
    entity = create_model("Entity", __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [sample]}), **fields)
    entity_batch = create_model(
        "EntityBatch", __doc__="The entities whose online features to return (at most the server's max_request_rows).",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [{"entities": [sample]}]}),
        entities=(list[entity], Field(min_length=1)))
    return RequestModels(tuple(entity_keys), transaction, transaction_batch, entity, entity_batch)


class Prediction(BaseModel):
    fraud_probability: float = Field(ge=0, le=1, description="The model's probability that the transaction is fraud")
    model_version: str = Field(description="The version that scored this transaction (the registry's version number; a fixed "
                                           "model folder: its manifest's version)")
    variant: str = Field(description="champion, or challenger (canary routing sent this transaction's entity to it)",
                         examples=["champion"])
    missing_features: bool = Field(description="Some view held no row (or only one older than its TTL) for the transaction's entity")
    missing_views: list[str] = Field(description="The views that held no row for the entity")
    features: dict[str, float | None] | None = Field(default=None, description=(
        "With ?include_features=true: the feature vector as served, view:feature -> value (null: missing or null)"))


class PredictResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"model_version": "3", "predictions": [
        {"fraud_probability": 0.031, "model_version": "3", "variant": "champion", "missing_features": False, "missing_views": []}]}]})
    model_version: str = Field(description="The champion's version when the request was routed (each prediction names its own)")
    predictions: list[Prediction] = Field(description="One per transaction, in request order")


class FeatureRow(BaseModel):
    features: dict[str, float | None] = Field(description="view:feature -> value; null where the value is null or missing")
    missing_views: list[str]


class FeaturesResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "feature_refs": ["user_velocity:txn_count_1h"],
        "rows": [{"features": {"user_velocity:txn_count_1h": 3.0}, "missing_views": []}]}]})
    feature_refs: list[str]
    rows: list[FeatureRow] = Field(description="One per entity, in request order")


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class LoadedModel(BaseModel):
    variant: str = Field(examples=["champion"])
    model_name: str = Field(examples=["fraud_mlp"])
    model_version: str = Field(examples=["3"])
    source: str = Field(description="models:/<name>/<version>, or the model folder", examples=["models:/fraud_mlp/3"])
    device: str = Field(examples=["cpu", "cuda"])
    runtime: str = Field(examples=["numpy", "torch"])


class Ready(BaseModel):
    status: str = Field(examples=["ready"])
    model_version: str = Field(description="The champion's version")
    device: str = Field(examples=["cpu", "cuda"])
    runtime: str = Field(examples=["numpy", "torch"])
    routing: str = Field(description="none | canary | shadow", examples=["none"])
    models: list[LoadedModel]


class NotReady(BaseModel):
    status: str = Field(description="loading | online_store_unavailable | no_features", examples=["no_features"])
    detail: str


class ErrorMessage(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is: 'body', then field names and list positions")
    msg: str
    type: str


class ValidationErrors(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": [
        {"loc": ["body", "amount"], "msg": "Input should be greater than 0", "type": "greater_than"}]}]})
    detail: list[FieldError]


def field_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors as plain JSON: location, message, type. The offending input is left out: it
    can be NaN, Infinity or a structure nested too deep to encode."""
    return [{"loc": [part if isinstance(part, int) else str(part) for part in error["loc"]], "msg": str(error["msg"]),
             "type": str(error["type"])} for error in errors]


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}
_BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorMessage, "description": "Missing or wrong API key (only when the server has one)"},
    413: {"model": ErrorMessage, "description": "Request body larger than the server's limit"},
    415: {"model": ErrorMessage, "description": "Content-Type is not application/json"},
    422: {"model": ValidationErrors, "description": "Body is not JSON or does not match the schema; `loc` names the field"},
    503: {"model": ErrorMessage, "description": "Online store unavailable or server overloaded", "headers": _RETRY_AFTER},
}
PREDICT_RESPONSES = {200: {"model": PredictResponse, "description": "One prediction per transaction", "headers": {
    "X-Request-ID": {"description": "This request's id: its rows in the served-feature log carry it", "schema": {"type": "string"}}}},
    **_BODY_ERRORS}
FEATURES_RESPONSES = {200: {"model": FeaturesResponse, "description": "The model's online features per entity"}, **_BODY_ERRORS}
HEALTH_RESPONSES = {200: {"model": Health, "description": "The process is up"}}
READY_RESPONSES = {200: {"model": Ready, "description": "Model loaded, online store answering and holding the model's features"},
                   503: {"model": NotReady, "description": "Not ready: loading, online store unavailable or holding none of the model's features"}}
METRICS_RESPONSES = {200: {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}}


def _request_schema(model: Any, max_rows: int) -> tuple[dict, dict]:
    """(schema, its $defs) with refs into the OpenAPI components; the batch bound filled in."""
    schema = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    for definition in (schema, *definitions.values()):
        for name, field in definition.get("properties", {}).items():
            if name in ("transactions", "entities"):
                field["maxItems"] = max_rows
    return schema, definitions


def document_request_bodies(app: FastAPI, max_rows: int, models: Callable[[], RequestModels]) -> None:
    """The handlers parse their bodies themselves (one transaction or a batch; the row bound is a
    setting; the entity fields are the loaded model's), so their request bodies are added to the
    generated OpenAPI document here, once the model is loaded."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            loaded = models()
            bodies = {"/predict": ("PredictRequest", loaded.transaction | loaded.transaction_batch),
                      "/features": ("FeaturesRequest", loaded.entity_batch)}
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for path, (name, model) in bodies.items():
                schema, definitions = _request_schema(model, max_rows)
                components.update(definitions)
                components[name] = schema
                document["paths"][path]["post"]["requestBody"] = {
                    "required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi
