"""A bounded async load generator for the serving endpoint: p50/p99 latency and throughput.

    python -m serving.loadtest --spawn                   # start `featurestack serve`, report cold start, run both loads
    python -m serving.loadtest --url http://127.0.0.1:8000 --requests 2000 --concurrency 16 --batch 1
    python -m serving.loadtest --batch 1000 --requests 100 --concurrency 2
    python -m serving.loadtest --rate 200 --requests 2000       # fixed request rate (open loop)

Without --batch it runs single transactions (concurrency 16) and batches of 1000 (concurrency 2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time

import httpx
import numpy as np


def _body(rng: np.random.Generator, batch: int, users: int, merchants: int) -> dict:
    rows = [
        {"user_id": int(u), "merchant_id": int(m), "amount": round(float(a), 2)}
        for u, m, a in zip(rng.integers(1, users + 1, batch), rng.integers(1, merchants + 1, batch), rng.lognormal(3, 1, batch))
    ]
    return rows[0] if batch == 1 else {"transactions": rows}


async def run_load(url: str, requests: int, concurrency: int, batch: int, rate: float | None, users: int, merchants: int) -> dict:
    rng = np.random.default_rng(0)
    bodies = [_body(rng, batch, users, merchants) for _ in range(min(requests, 200))]
    latencies: list[float] = []
    failures = 0
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(index: int) -> None:
            nonlocal failures
            async with limit:
                started = time.perf_counter()
                response = await client.post("/predict", json=bodies[index % len(bodies)])
                latencies.append(time.perf_counter() - started)
                failures += response.status_code != 200

        started = time.perf_counter()
        tasks = []
        for index in range(requests):
            if rate:  # open loop: requests start on schedule whatever the latency
                await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    milliseconds = np.array(latencies) * 1000
    return {
        "requests": requests, "batch": batch, "concurrency": concurrency, "rate": rate, "failures": failures,
        "p50_ms": round(float(np.percentile(milliseconds, 50)), 2), "p99_ms": round(float(np.percentile(milliseconds, 99)), 2),
        "requests_per_s": round(requests / elapsed, 1), "rows_per_s": round(requests * batch / elapsed, 1),
    }


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
            print(json.dumps(asyncio.run(run_load(url, requests, concurrency, batch, args.rate, args.users, args.merchants))))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
