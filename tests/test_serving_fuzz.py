"""Serving never answers 5xx to any body: a hypothesis fuzz of arbitrary and near-valid JSON bodies,
a schemathesis run (all checks) over /openapi.json, and the cases an adversarial run found, on real
Redis with the hand-made model of test_serving_app. The docs pages and a request built only from
the published schema close it."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import replace

import jsonschema
import pytest
import redis
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import CHECKS, load_all_checks, max_response_time
from schemathesis.generation.modes import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans

from pipelines.contracts import MAX_AMOUNT
from serving.app import create_app
from serving_support import USERS

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def client(serving_settings):  # noqa: F811
    with TestClient(create_app(serving_settings)) as test_client:
        yield test_client


def _check_answer(response, path: str) -> None:
    """Never 5xx; a 422 names where the problem is; a 200 holds finite probabilities in [0, 1]."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if response.status_code == 422:
        assert body["detail"] and all(error["loc"][0] == "body" and error["msg"] for error in body["detail"])
    elif response.status_code == 200 and path == "/predict":
        assert all(math.isfinite(p["fraud_probability"]) and 0 <= p["fraud_probability"] <= 1 for p in body["predictions"])


json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=20)
field_names = st.sampled_from(["user_id", "merchant_id", "amount", "transactions", "entities", "surprise"])
valid_amounts = st.floats(min_value=5e-324, max_value=MAX_AMOUNT) | st.sampled_from([5e-324, MAX_AMOUNT, 12.5, 1])
numbers = (st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from([1e100, 1e308, -0.0, 0, "12.5", "NaN", 7.0]))
valid_rows = st.fixed_dictionaries({"user_id": st.integers(1, 45), "merchant_id": st.integers(1, 35), "amount": valid_amounts})
wrong_rows = st.fixed_dictionaries({"user_id": st.integers(1, 45) | numbers, "merchant_id": st.integers(1, 35) | numbers,
                                    "amount": valid_amounts | numbers}, optional={"surprise": json_values})
rows = st.one_of(valid_rows, valid_rows, wrong_rows)  # mostly valid, so the scoring path is fuzzed too
valid_entities = st.fixed_dictionaries({"user_id": st.integers(1, 45), "merchant_id": st.integers(1, 35)})
entities = valid_entities | st.fixed_dictionaries({"user_id": numbers, "merchant_id": numbers}, optional={"amount": json_values})
# Valid batches up to just past the server's bound of 50 rows, and small batches with some wrong rows.
near_valid = st.one_of(
    rows, st.fixed_dictionaries({"transactions": st.lists(valid_rows, max_size=55) | st.lists(rows, max_size=4)}),
    st.fixed_dictionaries({"entities": st.lists(valid_entities, max_size=55) | st.lists(entities, max_size=4)}))
bodies = st.one_of(near_valid, near_valid, json_values, st.dictionaries(field_names, json_values, max_size=4))


def _report(name: str, counts: Counter) -> None:
    """The counts the note asks for: requests sent, server errors among them."""
    total = sum(counts.values())
    server_errors = sum(n for (_, status), n in counts.items() if status >= 500)
    print(f"\n{name}: {total} requests, {server_errors} server errors; by (endpoint, status): {dict(sorted(counts.items()))}")
    assert total > 0 and server_errors == 0


def test_fuzzed_bodies_never_get_a_server_error(client):
    statuses: Counter = Counter()

    @settings(max_examples=2000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
    @given(path=st.sampled_from(["/predict", "/features"]), body=bodies)
    def exchange(path, body):
        # Python's encoder writes NaN/Infinity literals, as a careless client would.
        response = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
        statuses[path, response.status_code] += 1
        _check_answer(response, path)

    exchange()
    _report("hypothesis fuzz", statuses)
    # Both sides of the contract were reached on both endpoints.
    assert min(statuses[path, status] for path in ("/predict", "/features") for status in (200, 422)) > 25


@pytest.mark.parametrize(("body", "field"), [
    (b'{"user_id": 1, "merchant_id": 1, "amount": NaN}', ["body", "amount"]),
    (b'{"user_id": 1, "merchant_id": 1, "amount": Infinity}', ["body", "amount"]),
    (b'{"user_id": 1, "merchant_id": 1, "amount": 1e999}', ["body", "amount"]),
    (b'{"user_id": 1, "merchant_id": 1, "amount": 1e100}', ["body", "amount"]),
    (b'{"user_id": 1, "merchant_id": 1, "amount": 1' + b"0" * 400 + b"}", ["body", "amount"]),
    (b'{"user_id": 1, "merchant_id": 1, "amount": "12.5"}', ["body", "amount"]),
    (b'{"user_id": NaN, "merchant_id": 1, "amount": 1.0}', ["body", "user_id"]),
    (b'{"transactions": [{"user_id": 1, "merchant_id": 1, "amount": -Infinity}]}', ["body", "transactions", 0, "amount"]),
    (b'{"user_id": 1, "merchant_id": 1, "amount": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", ["body"]),
    (b'{"user_id": 1, "merchant_id": 1, "amount": ' + b"[" * 500 + b"]" * 500 + b"}", ["body", "amount"]),
    (b'{"user_id": 1, "merchant_id": 1, "amount": 1.0, "x": ' + b'{"a":' * 500 + b"1" + b"}" * 500 + b"}", ["body", "x"]),
])
def test_the_adversarial_cases_are_422_naming_the_field(client, body, field):
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    assert field in [error["loc"] for error in response.json()["detail"]]


def test_json_only_with_its_content_type(client):
    body = json.dumps({"user_id": 1, "merchant_id": 1, "amount": 1.0})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": content_type} if content_type else {}
        response = client.post("/predict", content=body, headers=headers)
        assert response.status_code == 415 and "application/json" in response.json()["detail"]
    assert client.post("/predict", content=body, headers={"content-type": "application/json; charset=utf-8"}).status_code == 200


def test_the_largest_amount_on_extreme_online_features_still_scores_finitely(serving_settings, redis_url):  # noqa: F811
    """Features Redis may hold (a user mean of 1e-300 makes the amount ratio 1e306) never make the
    score non-finite."""
    import pyarrow as pa
    from datetime import datetime, timezone

    from onlinestore.online_writer import publish_latest

    extreme_user = 31_337
    client = redis.Redis.from_url(redis_url)
    publish_latest(client, serving_settings.feast_project, USERS, pa.table({
        "user_id": pa.array([extreme_user], pa.int64()), "txn_count_1h": pa.array([2**62], pa.int64()),
        "amount_mean_7d": pa.array([1e-300], pa.float64()),
        "event_timestamp": pa.array([datetime.now(timezone.utc)], pa.timestamp("us", tz="UTC"))}))
    client.close()
    with TestClient(create_app(serving_settings)) as test_client:
        response = test_client.post("/predict", json={"user_id": extreme_user, "merchant_id": 1, "amount": MAX_AMOUNT})
        assert response.status_code == 200
        assert 0 <= response.json()["predictions"][0]["fraud_probability"] <= 1


def test_metrics_count_answered_rows_with_missing_features_per_view(client):
    def counted(view: str) -> float:
        found = re.search(rf'^featurestack_missing_entity_rows_total{{endpoint="/predict",view="{view}"}} (\S+)$',
                          client.get("/metrics").text, re.M)
        return float(found.group(1)) if found else 0.0

    before = counted("user_velocity"), counted("merchant_risk")
    rows = [{"user_id": 987_654_321, "merchant_id": 1, "amount": 1.0}] * 3 + [{"user_id": 1, "merchant_id": 987_654_321, "amount": 1.0}]
    assert client.post("/predict", json={"transactions": rows}).status_code == 200
    assert (counted("user_velocity"), counted("merchant_risk")) == (before[0] + 3, before[1] + 1)


def test_readyz_is_not_ready_on_a_redis_without_the_models_features(serving_settings):  # noqa: F811
    # The same Redis, read under another Feast project: none of its keys are the model's features.
    settings_other = replace(serving_settings, feast_project="fs_no_such_project")
    with TestClient(create_app(settings_other)) as test_client:
        answer = test_client.get("/readyz")
        assert answer.status_code == 503 and answer.json()["status"] == "no_features"
        assert "fs_no_such_project" in answer.json()["detail"]


def test_docs_and_redoc_render_from_local_assets(client):
    for page, asset_pattern in (("/docs", r'src="([^"]+swagger-ui-bundle\.js)"'), ("/redoc", r'src="([^"]+redoc\.standalone\.js)"')):
        html = client.get(page)
        assert html.status_code == 200
        asset = re.search(asset_pattern, html.text).group(1)
        assert asset.startswith("/") and "://" not in asset  # served here, not from a CDN
        assert client.get(asset).status_code == 200 and len(client.get(asset).content) > 100_000


def test_a_request_built_only_from_the_published_schema_is_answered(client):
    """A client developer's path: read /openapi.json, take the request example and the response
    schema, and check the answer against it."""
    from schemathesis.specs.openapi.definitions import OPENAPI_31  # the OpenAPI 3.1 meta-schema

    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    jsonschema.validate(document, OPENAPI_31)
    components = document["components"]["schemas"]
    operation = document["paths"]["/predict"]["post"]
    request_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request_schema = components[request_ref.rsplit("/", 1)[1]]
    batch_schema = components[request_schema["anyOf"][1]["$ref"].rsplit("/", 1)[1]]
    example = batch_schema["examples"][0]
    resolver_root = {"components": document["components"]}
    jsonschema.validate(example, {**request_schema, **resolver_root})
    response = client.post("/predict", json=example)
    assert response.status_code == 200
    response_schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.validate(response.json(), {**response_schema, **resolver_root})
    documented = {path: sorted(spec["post" if "post" in spec else "get"]["responses"]) for path, spec in document["paths"].items()}
    assert documented["/predict"] == documented["/features"] == ["200", "401", "413", "415", "422", "503"]
    assert documented["/readyz"] == ["200", "503"]
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]


load_all_checks()
ALL_CHECKS = [check for check in CHECKS.get_all() if check is not max_response_time]  # no timed assertions


def test_schemathesis_finds_nothing_with_all_checks(serving_settings):  # noqa: F811
    """Schema-valid and schema-breaking requests for every operation in /openapi.json, every check
    schemathesis has (status codes, content types, response schemas, acceptance and rejection of
    positive/negative data, methods, headers, no server error)."""
    app = create_app(serving_settings)  # schemathesis runs this app's lifespan itself
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    statuses: Counter = Counter()
    cases = st.one_of([schema.as_strategy(mode) for mode in GenerationMode])

    @settings(max_examples=1500, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
    @given(case=cases)
    def exchange(case):
        response = case.call_and_validate(checks=ALL_CHECKS)
        statuses[case.operation.label, response.status_code] += 1

    try:
        exchange()
    finally:
        shutdown_lifespans()
    _report("schemathesis", statuses)
