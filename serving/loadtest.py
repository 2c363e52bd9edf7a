"""A bounded async load generator for the serving endpoint: p50/p99 latency and throughput.

    python -m serving.loadtest --url http://127.0.0.1:8000 --requests 2000 --concurrency 16 --batch 1
    python -m serving.loadtest --batch 1000 --requests 100 --concurrency 2
    python -m serving.loadtest --rate 200 --requests 2000       # fixed request rate (open loop)
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rate", type=float, default=None, help="requests per second (default: as fast as allowed)")
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--merchants", type=int, default=400)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run_load(args.url, args.requests, args.concurrency, args.batch, args.rate, args.users, args.merchants))))


if __name__ == "__main__":
    main()
