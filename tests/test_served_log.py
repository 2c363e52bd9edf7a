"""Serving's monitoring through the real app on real Redis: the served-feature log holds exactly what
/predict returned, overflow drops rows without failing a request, shutdown flushes; /metrics reports the
age of the values served, rows scored per view, the cost estimate, and GPU gauges exactly when NVML sees
a GPU (none here: then they are absent and serving works)."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pynvml
import pytest
import redis
from fastapi.testclient import TestClient

from core.lake import partition_date_of
from core.served_log import served_dir
from core.settings import load_settings
from onlinestore.online_writer import publish_latest
from serving.app import create_app
from serving_support import MERCHANTS, REFS, UNKNOWN, USERS, write_model
from support import delete_project_keys
from training.features import REQUEST_FEATURES, model_inputs

pytestmark = pytest.mark.integration

USER_AGE = timedelta(hours=2)
MERCHANT_AGE = timedelta(minutes=30)


@pytest.fixture(scope="module")
def settings(tmp_path_factory, redis_url):
    """A model and online rows of a project of its own: user rows 2 hours old, merchant rows 30 minutes."""
    project = f"fs_served_{uuid.uuid4().hex[:10]}"
    state = tmp_path_factory.mktemp("served_state")
    model_dir = state / "model"
    write_model(model_dir, project)
    now = datetime.now(timezone.utc)
    client = redis.Redis.from_url(redis_url)
    publish_latest(client, project, USERS, pa.table({
        "user_id": pa.array(range(1, 41), pa.int64()),
        "txn_count_1h": pa.array([u % 5 for u in range(1, 41)], pa.int64()),
        "amount_mean_7d": pa.array([None if u == 40 else 10.0 * u for u in range(1, 41)], pa.float64()),
        "event_timestamp": pa.array([now - USER_AGE] * 40, pa.timestamp("us", tz="UTC")),
    }))
    publish_latest(client, project, MERCHANTS, pa.table({
        "merchant_id": pa.array(range(1, 31), pa.int64()),
        "chargeback_rate_30d": pa.array([m / 100 for m in range(1, 31)], pa.float64()),
        "event_timestamp": pa.array([now - MERCHANT_AGE] * 30, pa.timestamp("us", tz="UTC")),
    }))
    client.close()
    base = load_settings()
    yield replace(base, state_dir=state, data_dir=state / "data", redis_url=redis_url, feast_project=project,
                  serving=replace(base.serving, model_dir=str(model_dir), max_request_rows=50, max_wait_ms=1.0,
                                  served_log_flush_interval_s=600, served_log_flush_rows=10_000))
    delete_project_keys(redis_url, project)


def with_serving(settings, **changes):
    """`settings` with serving changes and a lake of its own."""
    folder = settings.state_dir / f"lake-{uuid.uuid4().hex[:8]}"
    return replace(settings, data_dir=folder, serving=replace(settings.serving, **changes))


def served_files(settings) -> list:
    return sorted(served_dir(settings.offline_dir, "fraud_detection_v1").glob("date=*/*"))


def metric(text: str, name: str, **labels) -> float | None:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    values = [float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)]
    return values[0] if values else None


def test_the_log_holds_exactly_what_predict_returned_and_is_written_on_shutdown(settings):
    settings = with_serving(settings)
    now = datetime.now(timezone.utc)
    bodies = [
        {"user_id": 3, "merchant_id": 7, "amount": 12.5, "txn_id": "t-single", "event_timestamp": "2026-11-30T12:00:00.000001Z"},
        {"transactions": [{"user_id": u, "merchant_id": 1 + u % 30, "amount": 2.5 * u, "txn_id": f"t-{u}"} for u in range(1, 41)]
         + [{"user_id": UNKNOWN, "merchant_id": 1, "amount": 3.0}, {"user_id": 2, "merchant_id": UNKNOWN, "amount": 4.0}]},
        *({"transactions": [{"user_id": u, "merchant_id": u, "amount": 1.0 + u}]} for u in range(1, 21)),  # merged into batches
    ]
    with TestClient(create_app(settings)) as client:
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda body: client.post("/predict", params={"include_features": "true"}, json=body), bodies))
        assert [reply.status_code for reply in replies] == [200] * len(bodies)
        text = client.get("/metrics").text
        assert served_files(settings) == []  # buffered: nothing reached the flush size or interval
        assert metric(text, "featurestack_served_log_dropped_rows_total", reason="buffer_full") == 0
    # Leaving the client shut the server down: the buffer was written.
    rows = [row for path in served_files(settings) for row in pq.read_table(path).to_pylist()]
    for path in served_files(settings):
        scored_days = pq.read_table(path, columns=["scored_at"]).column(0).to_pylist()
        assert {day.date() for day in scored_days} == {partition_date_of(path)}
    by_request: dict[str, list[dict]] = {}
    for row in rows:
        by_request.setdefault(row["request_id"], []).append(row)
    assert len(rows) == 1 + 42 + 20 and len(by_request) == len(bodies)

    for body, reply in zip(bodies, replies):
        sent = body.get("transactions", [body])
        logged = by_request[reply.headers["x-request-id"]]
        predictions = reply.json()["predictions"]
        assert len(logged) == len(sent) == len(predictions)
        assert [row["score"] for row in logged] == [p["fraud_probability"] for p in predictions]
        for ref in REFS:
            assert [row[ref.replace(":", "__")] for row in logged] == [p["features"][ref] for p in predictions]
        assert [(row["user_id"], row["merchant_id"], row["txn_id"]) for row in logged] \
            == [(t["user_id"], t["merchant_id"], t.get("txn_id")) for t in sent]
        # The request-time features the model was fed, from the features it was served.
        values = np.array([[np.nan if p["features"][ref] is None else p["features"][ref] for ref in REFS] for p in predictions])
        missing = np.array([[view in p["missing_views"] for view in ("user_velocity", "merchant_risk")] for p in predictions])
        inputs = model_inputs(values, missing, np.array([t["amount"] for t in sent]), REFS.index("user_velocity:amount_mean_7d"))
        for index, name in enumerate(REQUEST_FEATURES):
            assert [row[f"request__{name}"] for row in logged] == inputs[:, len(inputs[0]) - len(REQUEST_FEATURES) + index].tolist()
        for row, transaction in zip(logged, sent):
            if "event_timestamp" in transaction:
                assert row["event_timestamp"] == datetime.fromisoformat(transaction["event_timestamp"])
            else:  # now, as the server saw it
                assert now <= row["event_timestamp"] <= row["scored_at"]
            assert (row["model_name"], row["model_version"], row["variant"], row["answered"]) == ("fraud_mlp", "test-v1", "champion", True)


def test_rows_beyond_the_buffer_are_dropped_and_counted_while_requests_are_answered(settings):
    settings = with_serving(settings, served_log_buffer_rows=5, served_log_flush_rows=5)
    with TestClient(create_app(settings)) as client:
        big = client.post("/predict", json={"transactions": [{"user_id": u, "merchant_id": 1, "amount": 1.0} for u in range(1, 9)]})
        assert big.status_code == 200 and len(big.json()["predictions"]) == 8
        small = client.post("/predict", json={"transactions": [{"user_id": u, "merchant_id": 1, "amount": 1.0} for u in range(1, 4)]})
        assert small.status_code == 200
        text = client.get("/metrics").text
        assert metric(text, "featurestack_served_log_dropped_rows_total", reason="buffer_full") == 8
    [written] = served_files(settings)
    assert pq.read_table(written, columns=["request_id"]).column(0).to_pylist() == [small.headers["x-request-id"]] * 3


def test_with_the_log_off_nothing_is_written_and_predictions_are_the_same(settings):
    on, off = with_serving(settings), with_serving(settings, served_log=False)
    body = {"transactions": [{"user_id": u, "merchant_id": u, "amount": 5.0} for u in (1, 2, UNKNOWN)]}
    with TestClient(create_app(on)) as client:
        logged = client.post("/predict", json=body).json()
    with TestClient(create_app(off)) as client:
        unlogged = client.post("/predict", json=body).json()
        assert "featurestack_served_log" not in client.get("/metrics").text
    assert unlogged == logged
    assert served_files(off) == [] and len(served_files(on)) == 1


def test_metrics_report_the_age_of_served_values_and_rows_scored_per_view(settings):
    rows = [{"user_id": u, "merchant_id": u, "amount": 5.0} for u in range(1, 6)]
    rows += [{"user_id": UNKNOWN, "merchant_id": 1, "amount": 5.0}, {"user_id": UNKNOWN + 1, "merchant_id": 2, "amount": 5.0},
             {"user_id": 1, "merchant_id": UNKNOWN, "amount": 5.0}]
    with TestClient(create_app(with_serving(settings))) as client:
        assert client.post("/predict", json={"transactions": rows}).status_code == 200
        text = client.get("/metrics").text
    for view, served, missing, younger, older in (("user_velocity", 6, 2, "3600.0", "10800.0"),
                                                 ("merchant_risk", 7, 1, "900.0", "3600.0")):
        assert metric(text, "featurestack_scored_rows_total", view=view) == 8
        assert metric(text, "featurestack_missing_entity_rows_total", endpoint="/predict", view=view) == missing
        age = "featurestack_served_feature_age_seconds"
        assert metric(text, f"{age}_count", view=view) == served  # rows whose entity had no row are not observed
        assert metric(text, f"{age}_bucket", le=younger, view=view) == 0
        assert metric(text, f"{age}_bucket", le=older, view=view) == served
    assert USER_AGE.total_seconds() * 6 < metric(text, "featurestack_served_feature_age_seconds_sum", view="user_velocity") \
        < (USER_AGE.total_seconds() + 600) * 6
    assert "featurestack_cost_per_1k_predictions_usd" not in text  # no price configured


def test_the_cost_per_1000_predictions_is_the_hourly_price_over_uptime_and_predictions(settings):
    price = 3.6
    started = time.monotonic()
    with TestClient(create_app(with_serving(settings, gpu_hourly_price_usd=price))) as client:
        up = time.monotonic()
        assert "featurestack_cost_per_1k_predictions_usd" not in client.get("/metrics").text  # no prediction yet
        assert client.post("/predict", json={"transactions": [{"user_id": 1, "merchant_id": 1, "amount": 1.0}] * 40}).status_code == 200
        before = time.monotonic()
        cost = metric(client.get("/metrics").text, "featurestack_cost_per_1k_predictions_usd")
        after = time.monotonic()
    # Up between (before - up) and (after - started) seconds when scraped, 40 predictions.
    assert price * (before - up) / 3600 / 40 * 1000 <= cost <= price * (after - started) / 3600 / 40 * 1000


def nvml_devices() -> int:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return 0
    try:
        return pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()


def test_gpu_gauges_are_there_exactly_when_nvml_sees_a_gpu_and_serving_works_without(settings):
    devices = nvml_devices()
    with TestClient(create_app(with_serving(settings))) as client:
        assert client.post("/predict", json={"user_id": 1, "merchant_id": 1, "amount": 1.0}).status_code == 200
        text = client.get("/metrics").text
    assert "featurestack_scored_rows_total" in text
    for name in ("featurestack_gpu_utilization_ratio", "featurestack_gpu_memory_used_bytes", "featurestack_gpu_power_watts"):
        assert [metric(text, name, gpu=str(index)) is not None for index in range(devices)] == [True] * devices
        assert (name in text) == (devices > 0)
