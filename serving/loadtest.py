"""A bounded async load generator for the serving endpoint: p50/p99 latency and throughput.

    python -m serving.loadtest --spawn                   # start `featurestack serve`, report cold start, run both loads
    python -m serving.loadtest --url http://127.0.0.1:8000 --requests 2000 --concurrency 16 --batch 1
    python -m serving.loadtest --batch 1000 --requests 100 --concurrency 2
    python -m serving.loadtest --rate 200 --requests 2000       # fixed request rate (open loop)
    python -m serving.loadtest --tally-versions                 # also count the model versions that answered

Without --batch it runs single transactions (concurrency 16) and batches of 1000 (concurrency 2).
With --rate the load is open loop: request i is sent at start + i/rate whatever earlier responses did, and
its latency counts from that scheduled time (queueing behind a slow server is part of it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from collections import Counter

import httpx
import numpy as np


def _body(rng: np.random.Generator, batch: int, users: int, merchants: int) -> dict:
    rows = [
        {"user_id": int(u), "merchant_id": int(m), "amount": round(float(a), 2)}
        for u, m, a in zip(rng.integers(1, users + 1, batch), rng.integers(1, merchants + 1, batch), rng.lognormal(3, 1, batch))
    ]
    return rows[0] if batch == 1 else {"transactions": rows}


async def run_load(url: str, requests: int, concurrency: int, batch: int, rate: float | None, users: int, merchants: int,
                   *, path: str = "/predict", bodies: list | None = None, headers: dict | None = None,
                   keep_latencies: bool = False, tally_versions: bool = False) -> dict:
    """`requests` POSTs to `path`, at most `concurrency` in flight; the bodies cycle through `bodies`
    (default: random transactions, `batch` per request), JSON-encoded once before the clock starts.

    rate None: closed loop, latency from each send. rate: open loop at that many requests per second,
    latency from each request's scheduled send time. `tally_versions`: count the predictions per model
    version that scored them (`model_versions`; e.g. across an alias change)."""
    if bodies is None:
        rng = np.random.default_rng(0)
        bodies = [_body(rng, batch, users, merchants) for _ in range(min(requests, 200))]
    payloads = [json.dumps(body).encode() for body in bodies]
    latencies: list[float] = []
    failures = 0
    versions: Counter = Counter()
    limit = asyncio.Semaphore(concurrency)
    headers = {"content-type": "application/json", **(headers or {})}
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers,
                                 limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)) as client:
        async def one(index: int, due: float | None) -> None:
            nonlocal failures
            async with limit:
                started = time.perf_counter() if due is None else due
                try:
                    response = await client.post(path, content=payloads[index % len(payloads)])
                    failures += response.status_code != 200
                    if tally_versions and response.status_code == 200:
                        versions.update(prediction["model_version"] for prediction in response.json()["predictions"])
                except httpx.HTTPError:  # a timeout or a dropped connection is a failed request, not the end of the run
                    failures += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        tasks = []
        for index in range(requests):
            due = None
            if rate:  # open loop: requests start on schedule whatever the latency
                due = started + index / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(index, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    milliseconds = np.array(latencies) * 1000
    report = {
        "requests": requests, "batch": batch, "concurrency": concurrency, "rate": rate, "failures": failures,
        "p50_ms": round(float(np.percentile(milliseconds, 50)), 2), "p99_ms": round(float(np.percentile(milliseconds, 99)), 2),
        "requests_per_s": round(requests / elapsed, 1), "rows_per_s": round(requests * batch / elapsed, 1),
    }
    if keep_latencies:
        report["latencies_s"] = latencies
    if tally_versions:
        report["model_versions"] = dict(versions)
    return report


def _spawn_server() -> tuple[subprocess.Popen, str, float]:
    """`featurestack serve` on a free port; returns it, its URL and the seconds from start to /readyz 200."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "featurestack.cli", "serve", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    while True:
        if server.poll() is not None:
            raise SystemExit(f"featurestack serve exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return server, url, time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--spawn", action="store_true", help="start `featurestack serve` (current settings) and report its cold start")
    parser.add_argument("--requests", type=int, default=None, help="default: 2000 single / 100 batched")
    parser.add_argument("--concurrency", type=int, default=None, help="default: 16 single / 2 batched")
    parser.add_argument("--batch", type=int, action="append", help="rows per request (repeatable; default: 1 and 1000)")
    parser.add_argument("--rate", type=float, default=None, help="requests per second (default: as fast as allowed)")
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--merchants", type=int, default=400)
    parser.add_argument("--tally-versions", action="store_true", help="count the predictions per model version that scored them")
    args = parser.parse_args()
    server = None
    url = args.url
    if args.spawn:
        server, url, seconds = _spawn_server()
        print(json.dumps({"cold_start_to_ready_s": round(seconds, 2)}))
    try:
        for batch in args.batch or [1, 1000]:
            requests = args.requests or (2000 if batch == 1 else 100)
            concurrency = args.concurrency or (16 if batch == 1 else 2)
            print(json.dumps(asyncio.run(run_load(url, requests, concurrency, batch, args.rate, args.users, args.merchants,
                                                 tally_versions=args.tally_versions))))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
