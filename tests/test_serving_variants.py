"""Serving from the model registry: the champion by alias, hot reload under load (a real uvicorn server
and the load generator), canary and shadow routing with per-variant metrics, and the Open Inference
Protocol through tritonclient. Two hand-made versions registered in a real MLflow (sqlite under tmp)."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Histogram
from tritonclient.utils import InferenceServerException

from core.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from core.served_log import served_dir
from eventlog.events import epoch_micros
from onlinestore.online_reader import online_store_client
from serving.app import create_app
from serving.loadtest import run_load
from serving.variants import ModelRouter, ScoredRows, ScoringRequest, VariantMetrics, model_source, route_points
from serving_support import HeldReplies, register_version, running_server, write_model
from support import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(tmp_path_factory, serving_settings):
    """Versions 1 (champion) and 2 (challenger) of fraud_mlp, other weights each."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    for seed, version in ((0, "test-v1"), (1, "test-v2")):
        write_model(root / version, serving_settings.feast_project, version=version, seed=seed)
        register_version(uri, root / "artifacts", root / version)
    models = ModelRegistry(uri, root / "cache")
    models.set_alias("fraud_mlp", CHAMPION, "1")
    models.set_alias("fraud_mlp", CHALLENGER, "2")
    return uri, models


def registry_settings(serving_settings, registry, **serving):
    uri, _models = registry
    return replace(serving_settings, mlflow_tracking_uri=uri, serving=replace(
        serving_settings.serving, model_dir="", reload_interval_s=0, max_request_rows=1000, max_pending_rows=50_000, **serving))


def test_the_default_model_uri_names_the_feature_services_model(tmp_path):
    from core.feast_repo import load_repo_contents
    from core.model_registry import parse_model_uri
    from core.settings import ServingSettings, load_settings
    from support import platform_environment

    with platform_environment(tmp_path, "fs_model_uri", ""):
        services = {service.name: service for service in load_repo_contents(load_settings()).feature_services}
    serving = ServingSettings()
    assert parse_model_uri(serving.model_uri) == (services[serving.feature_service].tags["model"], CHAMPION)


def test_route_points_are_fixed_and_spread_evenly():
    users = np.arange(1, 100_001, dtype=np.int64)
    points = route_points(users)
    assert ((points >= 0) & (points < 1)).all()
    np.testing.assert_array_equal(points, route_points(users.copy()))  # a pure function of the value
    assert route_points(np.array([42]))[0] == points[41]  # of the value alone, not of its batch
    assert abs((points < 0.2).mean() - 0.2) < 0.005
    text = route_points(np.array(["u-1", "u-2", "u-1"], dtype=object))
    assert text[0] == text[2] != text[1]


def test_canary_sends_its_share_of_users_to_the_challenger_always_the_same_ones(serving_settings, registry):
    settings = registry_settings(serving_settings, registry, routing="canary", canary_share=0.2)
    users = list(range(1, 10_001))
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz").json()
        assert [(m["variant"], m["model_version"], m["source"]) for m in ready["models"]] == [
            ("champion", "1", "models:/fraud_mlp/1"), ("challenger", "2", "models:/fraud_mlp/2")]

        def variants_of(order: list[int], batch: int) -> dict[int, tuple[str, str]]:
            seen = {}
            for start in range(0, len(order), batch):
                rows = [{"user_id": u, "merchant_id": 1 + u % 30, "amount": 10.0} for u in order[start:start + batch]]
                reply = client.post("/predict", json={"transactions": rows})
                assert reply.status_code == 200, reply.text
                for row, prediction in zip(rows, reply.json()["predictions"]):
                    seen[row["user_id"]] = (prediction["variant"], prediction["model_version"])
            return seen

        first = variants_of(users, 1000)
        again = variants_of(list(np.random.default_rng(7).permutation(users).tolist()), 333)  # other batches, other order
        metrics = client.get("/metrics").text
    assert set(first.values()) == {("champion", "1"), ("challenger", "2")}
    canary_users = sum(variant == "challenger" for variant, _ in first.values())
    assert abs(canary_users / len(users) - 0.2) <= 0.02, canary_users
    assert again == first  # the same user always meets the same model
    rows = {variant: _metric(metrics, "featurestack_variant_rows_total", variant=variant, model_version=version)
            for variant, version in (("champion", "1"), ("challenger", "2"))}
    assert rows == {"champion": 2 * (len(users) - canary_users), "challenger": 2 * canary_users}
    assert _metric(metrics, "featurestack_variant_score_count", variant="challenger", model_version="2") == rows["challenger"]


def test_shadow_answers_with_the_champion_and_hands_both_scorings_to_the_hook(serving_settings, registry):
    scored: list[ScoredRows] = []
    settings = registry_settings(serving_settings, registry, routing="shadow")
    rows = [{"user_id": u, "merchant_id": 1 + u % 30, "amount": 5.0 * u, "txn_id": f"t{u}"} for u in range(1, 21)]
    with TestClient(create_app(settings, on_scored=scored.append)) as client:
        reply = client.post("/predict", json={"transactions": rows})
        assert reply.status_code == 200
        predictions = reply.json()["predictions"]
        wait_until(lambda: len(scored) == 2)
        metrics = client.get("/metrics").text
    assert {(p["variant"], p["model_version"]) for p in predictions} == {("champion", "1")}
    answered, shadow = sorted(scored, key=lambda rows_: not rows_.answered)
    assert (answered.variant, answered.model_version, answered.answered) == ("champion", "1", True)
    assert (shadow.variant, shadow.model_version, shadow.answered) == ("challenger", "2", False)
    assert answered.request_id == shadow.request_id and answered.txn_ids == shadow.txn_ids == [r["txn_id"] for r in rows]
    assert answered.scored.scores.astype(float).tolist() == [p["fraud_probability"] for p in predictions]
    assert not np.array_equal(answered.scored.scores, shadow.scored.scores)  # other weights, other scores
    np.testing.assert_array_equal(shadow.entities["user_id"], [r["user_id"] for r in rows])
    assert shadow.feature_refs == answered.feature_refs and shadow.scored.features.values.shape == (20, 3)
    assert shadow.request_features == ("amount_log", "amount_to_user_mean_7d")
    np.testing.assert_allclose(shadow.scored.request_values[:, 0], np.log1p([r["amount"] for r in rows]), rtol=1e-6)
    for variant, version in (("champion", "1"), ("challenger", "2")):
        assert _metric(metrics, "featurestack_variant_rows_total", variant=variant, model_version=version) == 20
        assert _metric(metrics, "featurestack_variant_requests_total", variant=variant, model_version=version) == 1


@pytest.mark.parametrize("routing", ["shadow", "canary"])
def test_the_served_feature_log_holds_the_rows_of_both_variants_as_scored(serving_settings, registry, routing, tmp_path):
    """Every scored row of every variant, through the one scored hook: answered rows with the scores the
    client got, shadow rows (answered=False) with the challenger's scores; the request id of the header."""
    scored: list[ScoredRows] = []
    settings = replace(registry_settings(serving_settings, registry, routing=routing, canary_share=0.5,
                                         served_log_flush_interval_s=600), data_dir=tmp_path / "lake")
    rows = [{"user_id": u, "merchant_id": 1 + u % 30, "amount": 5.0 * u, "txn_id": f"t{u}"} for u in range(1, 41)]
    with TestClient(create_app(settings, on_scored=scored.append)) as client:
        reply = client.post("/predict", json={"transactions": rows})
        assert reply.status_code == 200, reply.text
        wait_until(lambda: len(scored) == 2)  # shadow: the answer and the shadow scoring; canary: each variant's share
    # Leaving the client shut the server down, which writes the buffered rows.
    files = sorted(served_dir(settings.offline_dir, "fraud_detection_v1").glob("date=*/*.parquet"))
    logged = pa.concat_tables([pq.read_table(path) for path in files]).to_pylist()
    predictions = {row["txn_id"]: p for row, p in zip(rows, reply.json()["predictions"])}
    assert {row["request_id"] for row in logged} == {reply.headers["x-request-id"]}
    assert {row["model_name"] for row in logged} == {"fraud_mlp"}
    answered = {row["txn_id"]: row for row in logged if row["answered"]}
    assert sorted(answered) == sorted(predictions)  # each answered row once
    assert {txn: (row["variant"], row["model_version"], row["score"]) for txn, row in answered.items()} \
        == {txn: (p["variant"], p["model_version"], p["fraud_probability"]) for txn, p in predictions.items()}
    shadow = [row for row in logged if not row["answered"]]
    if routing == "shadow":
        assert {p["variant"] for p in predictions.values()} == {"champion"}
        (shadow_rows,) = [rows_ for rows_ in scored if not rows_.answered]
        assert [(row["txn_id"], row["variant"], row["model_version"], row["score"]) for row in shadow] \
            == [(txn, "challenger", "2", score) for txn, score in zip(shadow_rows.txn_ids, shadow_rows.scored.scores.astype(float).tolist())]
        assert sorted(row["txn_id"] for row in shadow) == sorted(predictions)
        assert [row["score"] for row in shadow] != [answered[row["txn_id"]]["score"] for row in shadow]  # other weights
    else:
        assert shadow == []
        assert {(p["variant"], p["model_version"]) for p in predictions.values()} == {("champion", "1"), ("challenger", "2")}


def test_the_v2_protocol_answers_in_its_own_error_format_behind_the_api_key(serving_settings):
    secret = "v2-" + "k" * 24
    settings = replace(serving_settings, serving=replace(serving_settings.serving, api_key=secret))
    body = {"inputs": [{"name": "user_id", "datatype": "INT64", "shape": [1], "data": [1]},
                       {"name": "merchant_id", "datatype": "INT64", "shape": [1], "data": [1]},
                       {"name": "amount", "datatype": "FP64", "shape": [1], "data": [2.0]}]}
    with TestClient(create_app(settings)) as client:
        denied = client.post("/v2/models/fraud_mlp/infer", json=body)
        assert denied.status_code == 401 and "API key" in denied.json()["error"]
        auth = {"Authorization": f"Bearer {secret}"}
        assert client.post("/v2/models/fraud_mlp/infer", json=body, headers=auth).status_code == 200
        unknown = client.get("/v2/models/other_model")
        assert unknown.status_code == 404 and "fraud_mlp" in unknown.json()["error"]
        assert client.get("/v2/nothing/here").json() == {"error": "Not Found"}
        wrong = {"inputs": [{**body["inputs"][0], "data": [1, 2]}, *body["inputs"][1:]]}
        assert client.post("/v2/models/fraud_mlp/infer", json=wrong, headers=auth).json() == {
            "error": "input 'user_id': 2 elements in data, its shape says 1"}
        metrics = client.get("/metrics").text
    assert 'endpoint="/v2/models/{name}/infer"' in metrics and 'endpoint="/v2/models/{name}"' in metrics
    assert "other_model" not in metrics and "nothing" not in metrics


def test_tritonclient_infers_the_same_scores_as_predict(serving_settings, registry):
    uri, _models = registry
    now = datetime.now(timezone.utc)
    rows = [{"user_id": u, "merchant_id": 1 + u % 30, "amount": 3.5 * u, "event_timestamp": (now - timedelta(seconds=u)).isoformat()}
            for u in range(1, 41)]
    rows.append({"user_id": 987_654_321, "merchant_id": 2, "amount": 1.25, "event_timestamp": now.isoformat()})  # no features
    with running_server(_registry_environment(serving_settings, uri), ready_within_s=240) as (base, _server):
        expected = httpx.post(f"{base}/predict", json={"transactions": rows}).json()["predictions"]
        client = triton.InferenceServerClient(url=base.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("fraud_mlp")
        metadata = client.get_model_metadata("fraud_mlp")
        assert [(t["name"], t["datatype"]) for t in metadata["inputs"]] == [
            ("user_id", "INT64"), ("merchant_id", "INT64"), ("amount", "FP64"), ("event_timestamp", "INT64")]
        assert metadata["versions"] == ["1"]
        columns = {
            "user_id": ("INT64", np.array([r["user_id"] for r in rows], np.int64)),
            "merchant_id": ("INT64", np.array([r["merchant_id"] for r in rows], np.int64)),
            "amount": ("FP64", np.array([r["amount"] for r in rows], np.float64)),
            "event_timestamp": ("INT64", np.array([epoch_micros(datetime.fromisoformat(r["event_timestamp"])) for r in rows], np.int64)),
        }
        for binary in (True, False):  # tritonclient's default (binary tensors, no Content-Type), then JSON
            inputs = []
            for name, (datatype, values) in columns.items():
                tensor = triton.InferInput(name, [len(values)], datatype)
                tensor.set_data_from_numpy(values, binary_data=binary)
                inputs.append(tensor)
            outputs = None if binary else [triton.InferRequestedOutput(name, binary_data=False)
                                           for name in ("fraud_probability", "model_version")]
            result = client.infer("fraud_mlp", inputs, outputs=outputs)
            assert result.as_numpy("fraud_probability").astype(np.float64).tolist() == [p["fraud_probability"] for p in expected]
            assert {v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("model_version").tolist()} == {"1"}
            assert result.get_response()["model_version"] == "1"
        with pytest.raises(InferenceServerException, match="amount"):
            bad = triton.InferInput("amount", [1], "FP64")
            bad.set_data_from_numpy(np.array([-1.0]))
            client.infer("fraud_mlp", [_tensor("user_id", [1]), _tensor("merchant_id", [1]), bad])
        with pytest.raises(InferenceServerException, match="unknown model"):
            client.get_model_metadata("not_ours")
        client.close()


def test_a_swap_lets_the_rows_in_flight_finish_on_the_old_model_then_stops_it(serving_settings, registry, tmp_path):
    """A request waits on Redis (its replies held back) while the alias moves and the new version is
    swapped in: it is answered by the old version, which is stopped only afterwards."""
    _uri, models = registry
    proxy = HeldReplies(serving_settings.redis_url)
    settings = registry_settings(serving_settings, registry)
    request = ScoringRequest(request_id="r1", entities={"user_id": np.array([1, 2]), "merchant_id": np.array([1, 2])},
                             amounts=np.array([5.0, 6.0]), event_micros=np.array([epoch_micros(datetime.now(timezone.utc))] * 2),
                             txn_ids=[None, None])

    async def scenario():
        router = ModelRouter(model_source(settings), settings.serving, online_store_client(proxy.url, 60.0), settings.feast_project,
                             VariantMetrics(CollectorRegistry(), Histogram("rows", "rows", registry=None)))
        await router.start()
        old = router.deployment.champion
        proxy.flowing.clear()
        try:
            waiting = asyncio.create_task(router.score(request))
            while old.batcher.pending_rows == 0:  # the batch is with the model worker, waiting for Redis
                await asyncio.sleep(0.01)
            models.set_alias("fraud_mlp", CHAMPION, "2")
            assert await router.update()
            swapped = (router.deployment.champion.version, old.in_flight, waiting.done(), old.drained)
        finally:
            proxy.flowing.set()
        answer = await waiting
        while not old.drained:
            await asyncio.sleep(0.01)
        after = await router.score(request)
        await router.stop()
        return swapped, answer, after

    try:
        swapped, answer, after = asyncio.run(scenario())
    finally:
        models.set_alias("fraud_mlp", CHAMPION, "1")
        proxy.close()
    assert swapped == ("2", 1, False, False)  # swapped while the old model still held the request
    assert [(part.variant, part.model.version) for part in answer.parts] == [("champion", "1")]
    assert [(part.variant, part.model.version) for part in after.parts] == [("champion", "2")]


def test_an_alias_change_under_load_swaps_the_model_with_no_failed_request(serving_settings, registry):
    uri, models = registry
    environment = {**_registry_environment(serving_settings, uri), "FEATURESTACK_SERVING_RELOAD_INTERVAL_S": "0.2"}
    rounds: list[dict] = []
    stop = threading.Event()

    def load(base: str) -> None:  # the load generator, round after round, until told to stop
        while not stop.is_set():
            rounds.append(asyncio.run(run_load(base, requests=100, concurrency=8, batch=4, rate=None, users=40, merchants=30,
                                               tally_versions=True)))

    try:
        with running_server(environment, ready_within_s=240) as (base, _server):
            generator = threading.Thread(target=load, args=(base,))
            generator.start()
            try:
                wait_until(lambda: len(rounds) >= 2, seconds=120)
                models.set_alias("fraud_mlp", CHAMPION, "2")
                wait_until(lambda: rounds[-1]["model_versions"] == {"2": 400}, seconds=120)
            finally:
                stop.set()
                generator.join(timeout=120)
            metrics = httpx.get(f"{base}/metrics").text
    finally:
        models.set_alias("fraud_mlp", CHAMPION, "1")
    answered = sum((Counter(r["model_versions"]) for r in rounds), Counter())
    print(f"\nhot swap under load: {len(rounds)} rounds, {sum(r['requests'] for r in rounds)} requests, "
          f"{sum(r['failures'] for r in rounds)} failed; rows answered per version {dict(answered)}")
    assert sum(r["failures"] for r in rounds) == 0, rounds
    assert answered["1"] > 0 and answered["2"] > 0 and set(answered) == {"1", "2"}
    assert sum(answered.values()) == 4 * sum(r["requests"] for r in rounds)  # every row answered, by one or the other
    assert _metric(metrics, "featurestack_model_swaps_total", variant="champion") == 1
    assert _metric(metrics, "featurestack_model_device_info", variant="champion", model_version="2", device="cpu", runtime="numpy") == 1
    with pytest.raises(AssertionError):  # version 1 is drained and unloaded
        _metric(metrics, "featurestack_model_device_info", variant="champion", model_version="1", device="cpu", runtime="numpy")


def _tensor(name: str, values: list[int]) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "INT64")
    tensor.set_data_from_numpy(np.array(values, np.int64))
    return tensor


def _registry_environment(serving_settings, tracking_uri: str) -> dict[str, str]:
    environment = {**os.environ, "FEATURESTACK_STATE_DIR": str(serving_settings.state_dir), "REDIS_URL": serving_settings.redis_url,
                   "FEATURESTACK_FEAST_PROJECT": serving_settings.feast_project, "MLFLOW_TRACKING_URI": tracking_uri,
                   "FEATURESTACK_SERVING_MAX_WAIT_MS": "1", "FEATURESTACK_SERVING_DEVICE": "cpu", "MLFLOW_DISABLE_TELEMETRY": "true"}
    # FEATURESTACK_DATA_DIR too: the server writes its served-feature log under its own state folder.
    for name in ("FEATURESTACK_MODEL_DIR", "FEATURESTACK_API_KEY", "FEATURESTACK_SERVING_ROUTING", "REDIS_TYPE", "FEATURESTACK_DATA_DIR"):
        environment.pop(name, None)
    return environment


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` with exactly these labels."""
    for found in re.finditer(rf"^{re.escape(name)}{{([^}}]*)}} (\S+)$", text, re.M):
        if dict(re.findall(r'(\w+)="([^"]*)"', found.group(1))) == labels:
            return float(found.group(2))
    raise AssertionError(f"{name}{labels} not in /metrics")
