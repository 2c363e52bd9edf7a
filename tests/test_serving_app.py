"""The serving endpoint through real HTTP handling (FastAPI TestClient, and `featurestack serve` on
uvicorn) on real Redis, with a hand-made model artifact and online rows under its own Feast project."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import torch
from fastapi.testclient import TestClient

from core.artifacts import ModelManifest
from core.redis_server import free_port, start_own_redis
from serving.app import create_app, online_store_client
from serving.batching import MicroBatcher, Overloaded
from serving.loadtest import run_load
from serving.predictor import Predictor
from serving.runner import NumpyMLP, TorchMLP
from serving_support import REFS, UNKNOWN, publish_online_data, running_server
from support import wait_until
from training.model import FraudMLP, model_inputs

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def client(serving_settings):
    with TestClient(create_app(serving_settings)) as test_client:
        yield test_client


def test_ready_and_healthy(client, serving_settings):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model_version": "test-v1", "device": "cpu", "runtime": "numpy", "routing": "none",
                            "models": [{"variant": "champion", "model_name": "fraud_mlp", "model_version": "test-v1",
                                        "source": serving_settings.serving.model_dir, "device": "cpu", "runtime": "numpy"}]}


def test_predict_one_transaction_and_a_batch_equal_the_model_on_the_online_features(client, serving_settings):
    single = client.post("/predict", json={"user_id": 1, "merchant_id": 1, "amount": 12.5})
    assert single.status_code == 200
    [prediction] = single.json()["predictions"]
    assert prediction["missing_features"] is False and prediction["missing_views"] == []

    rows = [{"user_id": u, "merchant_id": 1 + u % 30, "amount": 5.0 * u} for u in range(1, 41)]
    rows += [{"user_id": UNKNOWN, "merchant_id": 1, "amount": 3.0}, {"user_id": 2, "merchant_id": UNKNOWN, "amount": 3.0}]
    batch = client.post("/predict", json={"transactions": rows})
    assert batch.status_code == 200
    predictions = batch.json()["predictions"]
    assert len(predictions) == len(rows)
    assert [p["missing_views"] for p in predictions[-2:]] == [["user_velocity"], ["merchant_risk"]]
    assert not any(p["missing_features"] for p in predictions[:-2])

    # The same numbers as the model on the reader's features + request-time features, computed here.
    model_dir = Path(serving_settings.serving.model_dir)
    predictor = Predictor(model_dir, redis.Redis.from_url(serving_settings.redis_url))
    users, merchants, amounts = (np.array([r[k] for r in rows]) for k in ("user_id", "merchant_id", "amount"))
    features = predictor.reader.read({"user_id": users, "merchant_id": merchants})
    inputs = model_inputs(features.values, features.missing_entity, amounts.astype(float), REFS.index("user_velocity:amount_mean_7d"))
    trained = FraudMLP(inputs.shape[1])
    trained.load_state_dict(torch.load(model_dir / "model.pt"))
    with torch.inference_mode():
        expected = torch.sigmoid(trained.eval()(torch.from_numpy(inputs))).numpy()
    np.testing.assert_allclose([p["fraud_probability"] for p in predictions], expected, rtol=1e-5)
    assert inputs[0, -1] == pytest.approx(5.0 / 10.0)  # amount relative to the user's amount_mean_7d
    assert inputs[39, -1] == 1.0  # user 40 has no mean (null): neutral ratio


def test_features_endpoint_returns_the_manifest_features_with_nulls_and_missing_flags(client):
    response = client.post("/features", json={"entities": [
        {"user_id": 3, "merchant_id": 7}, {"user_id": 40, "merchant_id": 7}, {"user_id": UNKNOWN, "merchant_id": 7}]})
    assert response.status_code == 200
    body = response.json()
    assert body["feature_refs"] == REFS
    known, null_mean, unknown = body["rows"]
    assert known == {"features": {REFS[0]: 3.0, REFS[1]: 30.0, REFS[2]: 0.07}, "missing_views": []}
    assert null_mean["features"][REFS[1]] is None and null_mean["missing_views"] == []
    assert unknown["features"][REFS[0]] is None and unknown["missing_views"] == ["user_velocity"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/predict", {"user_id": "seven", "merchant_id": 1, "amount": 1.0}, ["body", "user_id"]),
        ("/predict", {"user_id": 1.5, "merchant_id": 1, "amount": 1.0}, ["body", "user_id"]),
        ("/predict", {"user_id": True, "merchant_id": 1, "amount": 1.0}, ["body", "user_id"]),
        ("/predict", {"user_id": 2**64, "merchant_id": 1, "amount": 1.0}, ["body", "user_id"]),
        ("/predict", {"user_id": 1, "merchant_id": 1, "amount": "NaN"}, ["body", "amount"]),
        ("/predict", {"user_id": 1, "merchant_id": 1}, ["body", "amount"]),
        ("/predict", {"user_id": 1, "merchant_id": 1, "amount": -4.0}, ["body", "amount"]),
        ("/predict", {"user_id": 1, "merchant_id": 1, "amount": 1.0, "surprise": 1}, ["body", "surprise"]),
        ("/predict", {"user_id": 1, "merchant_id": 1, "amount": 1.0, "event_timestamp": 3083337}, ["body", "event_timestamp"]),
        ("/predict", [1, 2], ["body"]),
        ("/predict", {"transactions": []}, ["body", "transactions"]),
        ("/predict", {"transactions": [{"user_id": 1, "merchant_id": None, "amount": 1.0}]}, ["body", "transactions", 0, "merchant_id"]),
        ("/predict", {"transactions": [{"user_id": 1, "merchant_id": 1, "amount": 1.0}] * 51}, ["body", "transactions"]),
        ("/features", {"entities": [{"user_id": 1}]}, ["body", "entities", 0, "merchant_id"]),
        ("/features", {"entities": [{"user_id": 1, "merchant_id": 1}] * 51}, ["body", "entities"]),
    ],
)
def test_bad_requests_get_422_naming_the_field(client, path, body, field):
    response = client.post(path, json=body)
    assert response.status_code == 422
    assert field in [error["loc"] for error in response.json()["detail"]]


def test_invalid_json_is_a_422(client):
    response = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "not JSON" in response.json()["detail"][0]["msg"]


def test_metrics_expose_latency_batches_errors_and_device(client):
    client.post("/predict", json={"user_id": 1, "merchant_id": 1, "amount": 12.5})
    text = client.get("/metrics").text
    for name in ("featurestack_request_seconds_bucket", "featurestack_model_batch_rows_count",
                 "featurestack_request_rows_count", "featurestack_redis_errors_total",
                 'featurestack_model_device_info{device="cpu",model_version="test-v1",runtime="numpy",variant="champion"} 1.0',
                 'featurestack_variant_requests_total{model_version="test-v1",variant="champion"}'):
        assert name in text


def test_the_numpy_runner_equals_the_torch_model_and_torch_is_the_fallback(serving_settings, tmp_path):
    model_dir = Path(serving_settings.serving.model_dir)
    manifest = ModelManifest.read(model_dir)
    inputs = np.random.default_rng(3).normal(50, 40, (257, manifest.n_inputs)).astype(np.float32)
    client = redis.Redis.from_url(serving_settings.redis_url)
    on_numpy = Predictor(model_dir, client, device="cpu").runner
    assert isinstance(on_numpy, NumpyMLP)
    # An artifact without numpy weights (an older one) runs on torch.
    for name in ("model.pt", "manifest.json"):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())
    on_torch = Predictor(tmp_path, client, device="cpu").runner
    assert isinstance(on_torch, TorchMLP) and on_torch.device == "cpu"
    np.testing.assert_allclose(on_numpy.probabilities(inputs), on_torch.probabilities(inputs), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="FEATURESTACK_SERVING_DEVICE"):
        Predictor(model_dir, client, device="tpu")
    client.close()


def test_concurrent_requests_are_merged_into_one_model_batch():
    calls: list[int] = []

    def run(column):
        calls.append(len(column))
        return list(column * 2)

    async def scenario():
        batcher = MicroBatcher(run, max_rows=10, max_wait_ms=60_000, max_pending_rows=100)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(np.array([i])) for i in range(10)))
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert calls == [10]  # ten requests of one row, one model call (it closes when full, not on the wait)
    assert [list(r) for r in results] == [[2 * i] for i in range(10)]


def test_batches_never_exceed_max_rows_and_errors_reach_every_request():
    calls: list[int] = []

    def run(column):
        calls.append(len(column))
        if (column < 0).any():
            raise ValueError("negative")
        return list(column)

    async def scenario():
        batcher = MicroBatcher(run, max_rows=4, max_wait_ms=0, max_pending_rows=15)
        batcher.start()
        await asyncio.sleep(0)  # the worker waits for work
        ok = await asyncio.gather(*(batcher.submit(np.arange(n)) for n in (3, 3, 1, 6, 2)))
        failed = await asyncio.gather(batcher.submit(np.array([1])), batcher.submit(np.array([-1])), return_exceptions=True)
        crowded = await asyncio.gather(*(batcher.submit(np.arange(5)) for _ in range(4)), return_exceptions=True)
        await batcher.stop()
        return ok, failed, crowded

    ok, failed, crowded = asyncio.run(scenario())
    assert [list(r) for r in ok] == [list(range(n)) for n in (3, 3, 1, 6, 2)]
    assert calls[:4] == [3, 4, 6, 2]  # 3 | 3+1 | 6 alone (bigger than a batch) | 2
    assert [type(f) for f in failed] == [ValueError, ValueError]  # both requests of the failed batch learn why
    assert sum(isinstance(c, Overloaded) for c in crowded) == 1  # 3 x 5 queued rows fit in 15, the fourth request not


def test_redis_down_or_hanging_is_a_503_and_the_server_recovers(serving_settings, tmp_path):
    url = start_own_redis(tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    publish_online_data(url, serving_settings.feast_project)
    settings = replace(serving_settings, redis_url=url, serving=replace(serving_settings.serving, redis_timeout_s=0.3))
    transaction = {"user_id": 1, "merchant_id": 1, "amount": 1.0}
    with TestClient(create_app(settings)) as test_client:
        assert test_client.post("/predict", json=transaction).status_code == 200

        # A Redis that accepts but does not answer: the socket timeout makes it a 503, not a hang.
        redis.Redis.from_url(url).execute_command("CLIENT", "PAUSE", "4000", "ALL")
        hanging = test_client.post("/predict", json=transaction)
        assert hanging.status_code == 503 and "TimeoutError" in hanging.json()["detail"]
        assert test_client.post("/features", json={"entities": [{"user_id": 1, "merchant_id": 1}]}).status_code == 503
        wait_until(lambda: test_client.post("/predict", json=transaction).status_code == 200)

        # A Redis that is gone: 503 (connection refused), /readyz 503, counted in the metrics.
        redis.Redis.from_url(url).shutdown(nosave=True)
        down = test_client.post("/predict", json=transaction)
        assert down.status_code == 503 and "online store unavailable" in down.json()["detail"]
        assert test_client.get("/readyz").status_code == 503
        errors = re.search(r"^featurestack_redis_errors_total (\S+)$", test_client.get("/metrics").text, re.M)
        assert float(errors.group(1)) >= 3

        subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--daemonize", "yes",
                        "--save", "", "--appendonly", "no", "--dir", str(tmp_path)], check=True)
        wait_until(lambda: redis.Redis.from_url(url).ping())
        restarted_empty = test_client.get("/readyz")  # Redis is back without its data: not ready
        assert restarted_empty.status_code == 503 and restarted_empty.json()["status"] == "no_features"
        publish_online_data(url, serving_settings.feast_project)
        wait_until(lambda: test_client.post("/predict", json=transaction).status_code == 200)
        assert test_client.get("/readyz").status_code == 200
    redis.Redis.from_url(url).shutdown(nosave=True)


def test_the_server_starts_while_redis_is_down_and_becomes_ready_when_it_answers(serving_settings, tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    settings = replace(serving_settings, redis_url=url, serving=replace(serving_settings.serving, redis_timeout_s=0.3))
    with TestClient(create_app(settings)) as test_client:
        assert test_client.get("/healthz").status_code == 200
        assert test_client.get("/readyz").status_code == 503
        assert test_client.post("/predict", json={"user_id": 1, "merchant_id": 1, "amount": 1.0}).status_code == 503
        subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--daemonize", "yes",
                        "--save", "", "--appendonly", "no", "--dir", str(tmp_path)], check=True)
        try:
            wait_until(lambda: redis.Redis.from_url(url).ping())
            empty = test_client.get("/readyz")  # answering, but holding none of the model's features
            assert empty.status_code == 503 and empty.json()["status"] == "no_features"
            publish_online_data(url, serving_settings.feast_project)
            wait_until(lambda: test_client.get("/readyz").status_code == 200)
            predicted = test_client.post("/predict", json={"user_id": 1, "merchant_id": 1, "amount": 1.0})
            assert predicted.status_code == 200 and predicted.json()["predictions"][0]["missing_features"] is False
        finally:
            redis.Redis.from_url(url).shutdown(nosave=True)


def test_the_online_store_client_does_not_retry_so_errors_surface_within_the_timeout():
    client = online_store_client(f"redis://127.0.0.1:{free_port()}/0", 0.3)
    assert client.get_retry().get_retries() == 0
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 0.3
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_featurestack_serve_answers_predict_on_uvicorn(serving_settings):
    environment = {**os.environ, "FEATURESTACK_STATE_DIR": str(serving_settings.state_dir), "REDIS_URL": serving_settings.redis_url,
                   "FEATURESTACK_FEAST_PROJECT": serving_settings.feast_project, "FEATURESTACK_SERVING_MAX_WAIT_MS": "1",
                   "FEATURESTACK_MODEL_DIR": serving_settings.serving.model_dir}
    with running_server(environment) as (base, _server):
        response = httpx.post(f"{base}/predict", json={"transactions": [{"user_id": 1, "merchant_id": 1, "amount": 9.0}] * 3})
        assert response.status_code == 200 and len(response.json()["predictions"]) == 3
        assert response.json()["model_version"] == "test-v1"
        report = asyncio.run(run_load(base, requests=20, concurrency=4, batch=5, rate=None, users=40, merchants=30))
        assert report["failures"] == 0 and report["rows_per_s"] > 0 and report["p99_ms"] >= report["p50_ms"]


def test_an_api_key_guards_predict_and_features_but_not_health(serving_settings):
    secret = "s3cr3t-" + "k" * 24
    settings = replace(serving_settings, serving=replace(serving_settings.serving, api_key=secret, max_body_bytes=2_000))
    assert secret not in repr(settings)  # never printed with the settings
    body = {"user_id": 1, "merchant_id": 1, "amount": 1.0}
    with TestClient(create_app(settings)) as guarded:
        assert guarded.get("/healthz").status_code == 200
        missing = guarded.post("/predict", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert guarded.post("/predict", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert guarded.post("/features", json={"entities": [{"user_id": 1, "merchant_id": 1}]}).status_code == 401
        assert guarded.post("/predict", json=body, headers={"Authorization": f"Bearer {secret}"}).status_code == 200
        too_big = guarded.post("/predict", json={"transactions": [body] * 100}, headers={"Authorization": f"Bearer {secret}"})
        assert too_big.status_code == 413 and "exceeds 2000" in too_big.json()["detail"]
        chunked = guarded.post("/predict", content=iter([b'{"transactions": [', b" " * 3000, b"]}"]),
                               headers={"Authorization": f"Bearer {secret}", "content-type": "application/json"})
        assert chunked.status_code == 413


def test_values_older_than_their_views_ttl_are_served_missing_as_in_training(serving_settings):
    # The online rows are a minute old. Scored as of later transactions, each view's TTL (7 days for
    # user_velocity, 2 for merchant_risk) turns its value into a missing one, as the point-in-time join does.
    now = datetime.now(timezone.utc)
    with TestClient(create_app(serving_settings)) as client:
        def scored(days_later: int) -> dict:
            body = {"user_id": 1, "merchant_id": 1, "amount": 5.0, "event_timestamp": (now + timedelta(days=days_later)).isoformat()}
            reply = client.post("/predict", params={"include_features": "true"}, json=body)
            assert reply.status_code == 200, reply.text
            return reply.json()["predictions"][0]

        fresh, after_two_days, after_a_week = scored(0), scored(3), scored(8)
    assert fresh["missing_views"] == [] and fresh["features"]["merchant_risk:chargeback_rate_30d"] == 0.01
    assert after_two_days["missing_views"] == ["merchant_risk"] and after_two_days["features"]["merchant_risk:chargeback_rate_30d"] is None
    assert after_two_days["features"]["user_velocity:txn_count_1h"] == 1
    assert after_a_week["missing_views"] == ["user_velocity", "merchant_risk"]
    assert set(after_a_week["features"].values()) == {None}
