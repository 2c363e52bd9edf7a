"""Overload over real HTTP: `featurestack serve` (uvicorn, its own process) with a small queue bound and a
slow Redis (a TCP proxy that holds every reply for a while), hit by many more concurrent /predict
requests than the bound. The excess is refused at once (503, Retry-After, "overloaded"), the accepted
requests get correct predictions, nothing hangs, the queue never grows past its bound, and the server
is healthy and fast again afterwards."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
from urllib.parse import urlparse

import httpx
import numpy as np
import psutil
import pytest
import redis

from serving.predictor import Predictor
from serving_support import running_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_PENDING_ROWS = 8
MAX_BATCH_ROWS = 4
REDIS_DELAY_S = 0.2  # per reply chunk from Redis: one model batch takes at least this long (<= 20 rows/s)
WAVES, WAVE_REQUESTS, WAVE_GAP_S = 8, 30, 0.25  # 240 single-transaction requests in 2 s, ~4x what drains
CLIENT_TIMEOUT_S = 10.0


class SlowProxy:
    """A TCP proxy to Redis that waits `delay_s` before passing on each chunk Redis sends back."""

    def __init__(self, upstream: tuple[str, int], delay_s: float):
        self.upstream = upstream
        self.delay_s = delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="slow-proxy").start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.delay_s), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, delay_s: float) -> None:
        try:
            while data := source.recv(1 << 16):
                time.sleep(delay_s)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture(scope="module")
def overloadable_server(serving_settings):
    """`featurestack serve` with a queue bound of 8 rows, 4-row model batches, Redis behind the slow proxy."""
    parsed = urlparse(serving_settings.redis_url)
    proxy = SlowProxy((parsed.hostname or "127.0.0.1", parsed.port or 6379), REDIS_DELAY_S)
    proxied_url = serving_settings.redis_url.replace(f"{parsed.hostname}:{parsed.port}", f"127.0.0.1:{proxy.port}", 1)
    environment = {
        **os.environ, "FEATURESTACK_STATE_DIR": str(serving_settings.state_dir), "REDIS_URL": proxied_url,
        "FEATURESTACK_FEAST_PROJECT": serving_settings.feast_project, "FEATURESTACK_SERVING_DEVICE": "cpu",
        "FEATURESTACK_SERVING_MAX_PENDING_ROWS": str(MAX_PENDING_ROWS),
        "FEATURESTACK_SERVING_MAX_REQUEST_ROWS": str(MAX_PENDING_ROWS), "FEATURESTACK_SERVING_MAX_BATCH_ROWS": str(MAX_BATCH_ROWS),
        "FEATURESTACK_SERVING_MAX_WAIT_MS": "1", "FEATURESTACK_SERVING_REDIS_TIMEOUT_S": "3",
    }
    environment["FEATURESTACK_MODEL_DIR"] = serving_settings.serving.model_dir
    for name in ("FEATURESTACK_API_KEY", "REDIS_TYPE"):
        environment.pop(name, None)
    try:
        with running_server(environment) as (base, server):
            yield base, server
    finally:
        proxy.close()


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


async def _burst(base: str, transactions: list[dict]) -> list[tuple[int, dict, dict, float]]:
    """Waves of concurrent requests, one connection each: (status, body, headers, seconds) per request."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT_S, limits=limits) as client:

        async def one(transaction: dict, delay_s: float):
            await asyncio.sleep(delay_s)
            began = time.perf_counter()
            response = await client.post("/predict", json=transaction)
            return response.status_code, response.json(), dict(response.headers), time.perf_counter() - began

        # A transport error or a client timeout fails the test: every request must get an answer.
        return await asyncio.gather(*(one(t, WAVE_GAP_S * (i // WAVE_REQUESTS)) for i, t in enumerate(transactions)))


def test_overload_is_refused_fast_and_the_server_recovers(overloadable_server, serving_settings):
    base, server = overloadable_server
    process = psutil.Process(server.pid)
    transaction = {"user_id": 1, "merchant_id": 1, "amount": 1.0}
    assert httpx.post(f"{base}/predict", json=transaction, timeout=CLIENT_TIMEOUT_S).status_code == 200  # warm
    memory_before = process.memory_info().rss

    requests = WAVES * WAVE_REQUESTS
    transactions = [{"user_id": 1 + i % 40, "merchant_id": 1 + i % 30, "amount": 1.0 + i} for i in range(requests)]
    started = time.perf_counter()
    results = asyncio.run(_burst(base, transactions))
    burst_s = time.perf_counter() - started

    statuses = [status for status, *_ in results]
    assert set(statuses) <= {200, 503}, statuses
    accepted = [(t, body, seconds) for t, (status, body, _, seconds) in zip(transactions, results) if status == 200]
    refused = [(body, headers, seconds) for status, body, headers, seconds in results if status == 503]
    # 8 rows may wait and a 4-row batch takes >= 0.2 s: most of the burst is refused, but the queue drains
    # and takes new requests while the burst goes on (more accepted than fit in it at once).
    assert len(accepted) > MAX_PENDING_ROWS and len(refused) >= requests // 2, (len(accepted), len(refused))

    # Refused: at once, saying why, with a Retry-After; never waiting behind the queue.
    for body, headers, seconds in refused:
        assert body["detail"].startswith("overloaded: ") and f"(limit {MAX_PENDING_ROWS})" in body["detail"], body
        assert headers["retry-after"] == "1"
    refused_s, accepted_s = (np.array(sorted(seconds for *_, seconds in group)) for group in (refused, accepted))
    assert np.median(refused_s) < min(0.5, np.median(accepted_s)) and refused_s[-1] < 3.0, (refused_s[-5:], accepted_s)
    assert accepted_s[0] >= REDIS_DELAY_S  # served ones did wait for the slow Redis
    assert max(seconds for *_, seconds in results) < CLIENT_TIMEOUT_S - 2 and burst_s < CLIENT_TIMEOUT_S

    # Accepted: the model's probabilities on the online features, as computed here without the server.
    model_dir = serving_settings.state_dir / "models" / "fraud_detection_v1" / "test-v1"
    predictor = Predictor(model_dir, redis.Redis.from_url(serving_settings.redis_url), device="cpu")
    columns = {key: np.array([t[key] for t, *_ in accepted]) for key in ("user_id", "merchant_id", "amount")}
    expected = predictor.predict({key: columns[key] for key in ("user_id", "merchant_id")}, columns["amount"].astype(float),
                                 time.time_ns()).scores
    served = [body["predictions"] for _, body, _ in accepted]
    assert all(len(p) == 1 and not p[0]["missing_features"] for p in served)
    np.testing.assert_allclose([p[0]["fraud_probability"] for p in served], expected, rtol=1e-5)

    # The queue never held more than its bound; the refusals are counted; nothing is left queued.
    metrics = httpx.get(f"{base}/metrics").text
    assert _metric(metrics, "featurestack_pending_rows_limit") == MAX_PENDING_ROWS
    assert MAX_BATCH_ROWS <= _metric(metrics, "featurestack_pending_rows_peak") <= MAX_PENDING_ROWS
    assert _metric(metrics, "featurestack_pending_rows") == 0
    assert _metric(metrics, "featurestack_overloaded_total") == len(refused)
    assert process.memory_info().rss - memory_before < 64 * 2**20  # bounded queue: no balloon

    # Healthy again: probes answer, and a request is served promptly.
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz").status_code == 200
    began = time.perf_counter()
    again = httpx.post(f"{base}/predict", json={"transactions": [transaction] * 3}, timeout=CLIENT_TIMEOUT_S)
    assert again.status_code == 200 and len(again.json()["predictions"]) == 3
    assert time.perf_counter() - began < 2.0
    assert server.poll() is None


def test_a_queue_bound_below_the_request_size_is_refused_at_start(monkeypatch):
    """Otherwise a full-size request would be answered "overloaded" forever, even by an idle server."""
    from core.settings import load_settings

    monkeypatch.setenv("FEATURESTACK_SERVING_MAX_PENDING_ROWS", "100")
    monkeypatch.setenv("FEATURESTACK_SERVING_MAX_REQUEST_ROWS", "4096")
    with pytest.raises(ValueError, match=r"MAX_PENDING_ROWS \(100\) must be at least .*MAX_REQUEST_ROWS \(4096\)"):
        load_settings()
