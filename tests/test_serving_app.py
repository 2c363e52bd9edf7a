"""The serving endpoint through real HTTP handling (FastAPI TestClient) on real Redis."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import replace

import pytest
import redis
from fastapi.testclient import TestClient

from featurestack.redis_server import start_own_redis
from serving.app import create_app


@pytest.fixture(scope="module")
def serving_settings(platform, trained_model):
    serving = replace(platform.settings.serving, model_dir=str(trained_model.model_dir), max_request_rows=50)
    return replace(platform.settings, redis_url=platform.redis.url, serving=serving)


@pytest.fixture(scope="module")
def client(serving_settings):
    with TestClient(create_app(serving_settings)) as test_client:
        yield test_client


def test_ready_and_healthy(client, trained_model):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model_version"] == trained_model.manifest["version"]


def test_predict_one_transaction_and_a_batch(client):
    single = client.post("/predict", json={"user_id": 1, "merchant_id": 1, "amount": 12.5})
    assert single.status_code == 200
    [prediction] = single.json()["predictions"]
    assert 0.0 <= prediction["fraud_probability"] <= 1.0 and prediction["missing_features"] is False

    batch = client.post("/predict", json={"transactions": [
        {"user_id": user, "merchant_id": 1 + user % 30, "amount": 10.0 * user} for user in range(1, 41)
    ] + [{"user_id": 987654321, "merchant_id": 1, "amount": 3.0}]})
    assert batch.status_code == 200
    predictions = batch.json()["predictions"]
    assert len(predictions) == 41
    assert predictions[-1]["missing_features"] is True and predictions[-1]["missing_views"] == ["user_velocity"]


def test_features_endpoint_returns_the_manifest_features(client, trained_model):
    response = client.post("/features", json={"entities": [{"user_id": 1, "merchant_id": 1}]})
    assert response.status_code == 200
    body = response.json()
    assert body["feature_refs"] == trained_model.manifest["feature_refs"]
    assert set(body["rows"][0]["features"]) == set(trained_model.manifest["feature_refs"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "seven", "merchant_id": 1, "amount": 1.0}, ["body", "user_id"]),
        ({"user_id": 1, "merchant_id": 1}, ["body", "amount"]),
        ({"user_id": 1, "merchant_id": 1, "amount": -4.0}, ["body", "amount"]),
        ({"user_id": 1, "merchant_id": 1, "amount": 1.0, "surprise": 1}, ["body", "surprise"]),
        ({"transactions": []}, ["body", "transactions"]),
        ({"transactions": [{"user_id": 1, "merchant_id": None, "amount": 1.0}]}, ["body", "transactions", 0, "merchant_id"]),
        ({"transactions": [{"user_id": 1, "merchant_id": 1, "amount": 1.0}] * 51}, ["body", "transactions"]),
    ],
)
def test_bad_requests_get_422_naming_the_field(client, body, field):
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert field in [error["loc"] for error in response.json()["detail"]]


def test_invalid_json_is_a_422(client):
    response = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "not JSON" in response.json()["detail"][0]["msg"]


def test_metrics_expose_latency_batches_errors_and_device(client):
    client.post("/predict", json={"user_id": 1, "merchant_id": 1, "amount": 12.5})
    text = client.get("/metrics").text
    for name in ("featurestack_request_seconds_bucket", "featurestack_model_batch_rows_count",
                 "featurestack_redis_errors_total", 'featurestack_model_device_info{device="cpu"'):
        assert name in text


def test_redis_down_is_a_503_within_the_timeout_and_the_server_recovers(serving_settings, tmp_path):
    url = start_own_redis(tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    settings = replace(serving_settings, redis_url=url)
    with TestClient(create_app(settings)) as test_client:
        assert test_client.post("/predict", json={"user_id": 1, "merchant_id": 1, "amount": 1.0}).status_code == 200
        redis.Redis.from_url(url).shutdown(nosave=True)
        started = time.monotonic()
        down = test_client.post("/predict", json={"user_id": 1, "merchant_id": 1, "amount": 1.0})
        assert down.status_code == 503 and "online store unavailable" in down.json()["detail"]
        assert time.monotonic() - started < 10  # bounded by the socket timeouts: no hang
        assert test_client.get("/readyz").status_code == 503
        errors = re.search(r"^featurestack_redis_errors_total (\S+)$", test_client.get("/metrics").text, re.M)
        assert float(errors.group(1)) >= 1

        subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--daemonize", "yes",
                        "--save", "", "--appendonly", "no", "--dir", str(tmp_path)], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            recovered = test_client.post("/predict", json={"user_id": 1, "merchant_id": 1, "amount": 1.0})
            if recovered.status_code == 200:
                break
            time.sleep(0.2)
        assert recovered.status_code == 200
    redis.Redis.from_url(url).shutdown(nosave=True)
