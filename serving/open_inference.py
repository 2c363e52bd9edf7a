"""The Open Inference Protocol (KServe v2 REST), beside our own /predict: any v2 client (tritonclient,
KServe's tooling) scores transactions here.

    GET  /v2                          server metadata
    GET  /v2/health/live              200 while the process runs
    GET  /v2/health/ready             200 when /readyz is (model loaded, online store holding its features)
    GET  /v2/models/{name}            the model's metadata: versions, input and output tensors
    GET  /v2/models/{name}/ready      200 when the model is loaded
    POST /v2/models/{name}/infer      score a batch

Inputs of infer, each a tensor of N elements (shape [N] or [N, 1]): one per entity key of the model
(user_id, merchant_id: INT64, any integer type accepted), `amount` (FP64 or FP32) and, optional,
`event_timestamp` (INT64, microseconds since the epoch, UTC; default: now). Outputs:
`fraud_probability` (FP32), `model_version` and `variant` (BYTES) per row; routing (canary, shadow)
applies as on /predict. Tensors travel as JSON or with the binary tensor extension (an
`Inference-Header-Content-Length` header, the JSON header, then the raw little-endian bytes of the
inputs with `binary_data_size`; outputs in binary when asked with `binary_data` or
`binary_data_output`). Request bodies may be gzip or deflate compressed (Content-Encoding). Errors
are JSON objects with an "error" key. The protocol has its own specification (KServe's
`rest_predict_v2.yaml`), so these routes are left out of /openapi.json.
"""

from __future__ import annotations

import json
import math
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from pipelines.contracts import MAX_AMOUNT
from serving.variants import Answer, ModelRouter, ScoringRequest

V2_PREFIX = "/v2"
HEADER_LENGTH = "inference-header-content-length"
# Latency labels: the route templates, never a model name from the URL.
ENDPOINTS = ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready",
             "/v2/models/{name}/infer")
NUMERIC = {"BOOL": "|b1", "UINT8": "|u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "|i1", "INT16": "<i2",
           "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
INTEGERS = ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")
AMOUNT, EVENT_TIMESTAMP = "amount", "event_timestamp"
OUTPUTS = {"fraud_probability": "FP32", "model_version": "BYTES", "variant": "BYTES"}
JSON_NUMBER_TYPES = {"BOOL": (bool,), "FP16": (int, float), "FP32": (int, float), "FP64": (int, float), "BYTES": (str,),
                     **{integer: (int,) for integer in INTEGERS}}


class V2Error(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


def endpoint_label(path: str) -> str | None:
    """The route template of a /v2 path (bounded label values), None when it is none of ours."""
    parts = path.split("/")
    if path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        return path
    if len(parts) == 4 and parts[1:3] == ["v2", "models"]:
        return "/v2/models/{name}"
    if len(parts) == 5 and parts[1:3] == ["v2", "models"] and parts[4] in ("ready", "infer"):
        return f"/v2/models/{{name}}/{parts[4]}"
    return None


def is_infer_path(path: str) -> bool:
    return endpoint_label(path) == "/v2/models/{name}/infer"


# --------------------------------------------------------------------------------------------------
# tensors in and out


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: dict[str, tuple[str, np.ndarray]]  # name -> (datatype, values flattened)
    outputs: list[tuple[str, bool]]  # requested (name, binary); empty: all, in `binary_default`
    binary_default: bool


def _decompressed(body: bytes, encoding: str | None, limit: int) -> bytes:
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise V2Error(400, f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise V2Error(400, f"the {encoding} body does not decompress: {error}") from None
    if len(data) > limit:
        raise V2Error(413, f"the decompressed body exceeds {limit} bytes")
    return data


def _shape(tensor: dict, name: str) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise V2Error(400, f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    return tuple(shape)


def _flatten(data: object) -> list:
    flat, pending = [], [data]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def _from_json(data: object, datatype: str, count: int, name: str) -> np.ndarray:
    flat = _flatten(data)
    if len(flat) != count:
        raise V2Error(400, f"input {name!r}: {len(flat)} elements in data, its shape says {count}")
    allowed = JSON_NUMBER_TYPES[datatype]
    for position, value in enumerate(flat):
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise V2Error(400, f"input {name!r}: element {position} is {json.dumps(value)[:40]}, not a {datatype} value")
    if datatype == "BYTES":
        return np.array(flat, dtype=object)
    try:
        return np.array(flat, dtype=NUMERIC[datatype])
    except OverflowError:
        raise V2Error(400, f"input {name!r}: a value out of range for {datatype}") from None


def _from_binary(chunk: bytes, datatype: str, count: int, name: str) -> np.ndarray:
    if datatype == "BYTES":  # each element: 4-byte little-endian length, then the bytes
        values, offset = [], 0
        while offset < len(chunk):
            if offset + 4 > len(chunk):
                raise V2Error(400, f"input {name!r}: truncated BYTES element")
            size = int.from_bytes(chunk[offset:offset + 4], "little")
            values.append(chunk[offset + 4:offset + 4 + size])
            offset += 4 + size
        if offset != len(chunk) or len(values) != count:
            raise V2Error(400, f"input {name!r}: BYTES data holds {len(values)} elements, its shape says {count}")
        return np.array(values, dtype=object)
    dtype = np.dtype(NUMERIC[datatype])
    if len(chunk) != count * dtype.itemsize:
        raise V2Error(400, f"input {name!r}: {len(chunk)} bytes of {datatype}, its shape needs {count * dtype.itemsize}")
    return np.frombuffer(chunk, dtype=dtype)


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    if header_length is None:
        header_bytes, binary = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise V2Error(400, f"Inference-Header-Content-Length {header_length!r} is not a length within the body ({len(body)} bytes)")
        header_bytes, binary = body[:int(header_length)], body[int(header_length):]
    try:
        header = json.loads(header_bytes)
    except (ValueError, RecursionError) as error:
        raise V2Error(400, f"the inference request is not JSON: {type(error).__name__}: {str(error)[:200]}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) or not header["inputs"]:
        raise V2Error(400, "the inference request needs an 'inputs' list of tensors")
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise V2Error(400, "'parameters' must be an object")
    inputs: dict[str, tuple[str, np.ndarray]] = {}
    offset = 0
    for tensor in header["inputs"]:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise V2Error(400, "every input needs a 'name'")
        name, datatype = tensor["name"], tensor.get("datatype")
        if name in inputs:
            raise V2Error(400, f"input {name!r} given twice")
        if datatype not in JSON_NUMBER_TYPES:
            raise V2Error(400, f"input {name!r}: datatype {datatype!r} is not one of {sorted(JSON_NUMBER_TYPES)}")
        count = math.prod(_shape(tensor, name))
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise V2Error(400, f"input {name!r}: binary_data_size {size!r} runs past the body's binary part ({len(binary)} bytes)")
            values = _from_binary(binary[offset:offset + size], datatype, count, name)
            offset += size
        elif "data" in tensor:
            values = _from_json(tensor["data"], datatype, count, name)
        else:
            raise V2Error(400, f"input {name!r} has neither 'data' nor a binary_data_size")
        inputs[name] = (datatype, values)
    if offset != len(binary):
        raise V2Error(400, f"{len(binary) - offset} bytes of binary data beyond what the inputs declare")
    outputs = []
    for tensor in header.get("outputs") or []:
        if not isinstance(tensor, dict) or tensor.get("name") not in OUTPUTS:
            raise V2Error(400, f"unknown output {tensor!r}: the outputs are {list(OUTPUTS)}")
        binary_flag = (tensor.get("parameters") or {}).get("binary_data", bool(parameters.get("binary_data_output")))
        outputs.append((tensor["name"], bool(binary_flag)))
    request_id = header.get("id")
    return InferRequest(id=request_id if isinstance(request_id, str) else None, inputs=inputs, outputs=outputs,
                        binary_default=bool(parameters.get("binary_data_output")))


def scoring_request(request: InferRequest, entity_keys: tuple[tuple[str, str], ...], max_rows: int) -> ScoringRequest:
    """The model's inputs out of the tensors, checked as /predict checks its JSON fields."""
    expected = [name for name, _ in entity_keys] + [AMOUNT, EVENT_TIMESTAMP]
    if unknown := [name for name in request.inputs if name not in expected]:
        raise V2Error(400, f"unknown inputs {unknown}: the model takes {expected} ({EVENT_TIMESTAMP} optional)")
    if missing := [name for name in expected[:-1] if name not in request.inputs]:
        raise V2Error(400, f"missing inputs {missing}: the model takes {expected} ({EVENT_TIMESTAMP} optional)")
    rows = {len(values) for _, values in request.inputs.values()}
    if len(rows) != 1:
        raise V2Error(400, f"the inputs differ in length: { {name: len(v) for name, (_, v) in request.inputs.items()} }")
    (count,) = rows
    if not 1 <= count <= max_rows:
        raise V2Error(400, f"{count} rows: between 1 and {max_rows} per request")

    def integers(name: str) -> np.ndarray:
        datatype, values = request.inputs[name]
        if datatype not in INTEGERS:
            raise V2Error(400, f"input {name!r} is {datatype}: an integer type (INT64) is expected")
        if datatype == "UINT64" and (values > np.iinfo(np.int64).max).any():
            raise V2Error(400, f"input {name!r}: a value beyond INT64")
        return values.astype(np.int64)

    entities = {}
    for name, value_type in entity_keys:
        if value_type == "string":
            datatype, values = request.inputs[name]
            if datatype != "BYTES":
                raise V2Error(400, f"input {name!r} is {datatype}: BYTES (UTF-8 text) is expected")
            try:
                entities[name] = np.array([v.decode() if isinstance(v, bytes) else v for v in values.tolist()], dtype=object)
            except UnicodeDecodeError:
                raise V2Error(400, f"input {name!r}: not UTF-8 text") from None
        else:
            entities[name] = integers(name)
            if value_type == "int32" and ((entities[name] < -(2**31)) | (entities[name] >= 2**31)).any():
                raise V2Error(400, f"input {name!r}: a value beyond INT32")
    datatype, amounts = request.inputs[AMOUNT]
    if datatype not in ("FP32", "FP64"):
        raise V2Error(400, f"input {AMOUNT!r} is {datatype}: FP64 or FP32 is expected")
    amounts = amounts.astype(np.float64)
    bad = ~(np.isfinite(amounts) & (amounts > 0) & (amounts <= MAX_AMOUNT))
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise V2Error(400, f"input {AMOUNT!r}: element {position} is {amounts[position]!r}, not within (0, {MAX_AMOUNT:g}]")
    if EVENT_TIMESTAMP in request.inputs:
        event_micros = integers(EVENT_TIMESTAMP)
    else:
        event_micros = np.full(count, time.time_ns() // 1000, np.int64)
    return ScoringRequest(request_id=uuid.uuid4().hex, entities=entities, amounts=amounts, event_micros=event_micros,
                          txn_ids=[None] * count)


def _tensor(name: str, values: np.ndarray | list[str], binary: bool) -> tuple[dict, bytes]:
    datatype = OUTPUTS[name]
    described = {"name": name, "datatype": datatype, "shape": [len(values)]}
    if not binary:
        return {**described, "data": values.tolist() if isinstance(values, np.ndarray) else values}, b""
    if datatype == "BYTES":
        raw = b"".join(len(encoded).to_bytes(4, "little") + encoded for encoded in (value.encode() for value in values))
    else:
        raw = np.ascontiguousarray(values, dtype=NUMERIC[datatype]).tobytes()
    return {**described, "parameters": {"binary_data_size": len(raw)}}, raw


def infer_response(model_name: str, request: InferRequest, answer: Answer, scoring: ScoringRequest) -> Response:
    """The answer as v2 tensors; X-Request-ID: the request id its rows carry in the served-feature log."""
    rows = len(scoring)
    versions, variants = [""] * rows, [""] * rows
    for part in answer.parts:
        for position in part.rows.tolist():
            versions[position], variants[position] = part.model.version, part.variant
    values = {"fraud_probability": answer.scores(rows), "model_version": versions, "variant": variants}
    requested = request.outputs or [(name, request.binary_default) for name in OUTPUTS]
    tensors, chunks = [], []
    for name, binary in requested:
        tensor, raw = _tensor(name, values[name], binary)
        tensors.append(tensor)
        chunks.append(raw)
    header = {"model_name": model_name, "outputs": tensors}
    if len(set(versions)) == 1:
        header["model_version"] = versions[0]
    if request.id is not None:
        header["id"] = request.id
    encoded = json.dumps(header).encode()
    request_id = {"X-Request-ID": scoring.request_id}
    if not any(chunks):
        return Response(encoded, media_type="application/json", headers=request_id)
    return Response(encoded + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(encoded)), **request_id})


# --------------------------------------------------------------------------------------------------
# routes


def add_open_inference_routes(app: FastAPI, router: Callable[[], ModelRouter], readiness: Callable[[], Awaitable[str | None]],
                              max_rows: int, max_body_bytes: int) -> None:
    """`router()`: the loaded models; `readiness()`: None when ready, else why not."""

    @app.exception_handler(V2Error)
    async def v2_failure(_request: Request, error: V2Error) -> JSONResponse:
        return v2_error(error.status, error.message)

    def served(name: str) -> ModelRouter:
        models = router()
        champion = models.deployment.champion
        if name != champion.name:
            raise V2Error(404, f"unknown model {name!r}: this server serves {champion.name!r}")
        return models

    @app.get("/v2", include_in_schema=False)
    async def server_metadata() -> JSONResponse:
        return JSONResponse({"name": "featurestack", "version": "1", "extensions": ["binary_tensor_data"]})

    @app.get("/v2/health/live", include_in_schema=False)
    async def live() -> JSONResponse:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        reason = await readiness()
        return JSONResponse({"ready": True}) if reason is None else v2_error(503, reason)

    @app.get("/v2/models/{name}", include_in_schema=False)
    async def model_metadata(name: str) -> JSONResponse:
        models = served(name)
        deployment = models.deployment
        entity_types = {"int64": "INT64", "int32": "INT32", "string": "BYTES"}
        return JSONResponse({
            "name": name, "versions": [model.version for model in deployment.models], "platform": "featurestack",
            "inputs": [*({"name": key, "datatype": entity_types[value_type], "shape": [-1]} for key, value_type in models.entity_keys),
                       {"name": AMOUNT, "datatype": "FP64", "shape": [-1]}, {"name": EVENT_TIMESTAMP, "datatype": "INT64", "shape": [-1]}],
            "outputs": [{"name": output, "datatype": datatype, "shape": [-1]} for output, datatype in OUTPUTS.items()],
        })

    @app.get("/v2/models/{name}/ready", include_in_schema=False)
    async def model_ready(name: str) -> JSONResponse:
        served(name)
        return JSONResponse({"name": name, "ready": True})

    @app.post("/v2/models/{name}/infer", include_in_schema=False)
    async def infer(name: str, request: Request) -> Response:
        models = served(name)
        body = _decompressed(await request.body(), request.headers.get("content-encoding"), max_body_bytes)
        parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
        scoring = scoring_request(parsed, models.entity_keys, max_rows)
        return infer_response(name, parsed, await models.score(scoring), scoring)
