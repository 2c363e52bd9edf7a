"""Serving with the served-feature log on against the same server with it off (issue 16): what logging
every scored row costs a request, p50 and p99, side by side in one run.

Two `featurestack serve` processes on the same model, Redis and project, started here and stopped here;
they differ only in FEATURESTACK_SERVED_LOG. The logging side flushes every second
(FEATURESTACK_SERVED_LOG_FLUSH_INTERVAL_S=1, far more often than the default), so parquet writes happen
during the timed runs. The same two works as the serving benchmark, alternating the sides: one entity per
request at a fixed rate (open loop), and 1000 candidates per request (closed loop).

Identical means: both sides answered every request with the same predictions for a checked batch, and,
after the logging side shut down (which flushes), its log holds exactly the rows it scored, none dropped,
while the other side wrote nothing.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from bench.data import BenchData
from bench.serving_bench import (
    BATCH_ROWS,
    OPEN_LOOP_CONCURRENCY,
    SERVICE,
    Server,
    _load,
    _ms,
    _pooled,
    ours_body,
    start_our_server,
    wait_ready,
)

FLUSH_INTERVAL_S = "1"


def _metric_sum(text: str, name: str) -> float:
    """The sum of a metric's samples (every label set) in a Prometheus text exposition."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


def _served_rows(lake: Path) -> int:
    from core.lake import row_count
    from core.served_log import served_dir

    folder = served_dir(lake / "offline", SERVICE)
    return row_count(folder) if folder.exists() else 0


def bench_serving_log(args, data: BenchData, config: dict, ours_worker, work_dir: Path, row, alternate) -> list[dict]:
    """Both rows of the served-feature log benchmark (row/alternate: bench.__main__'s _row and _alternate)."""
    from bench.sides import sample_entities

    model = ours_worker.call("serving_model", model_dir=str(work_dir / "serving_log_model"))
    lakes = {name: work_dir / f"served_log_{name}_lake" for name in ("off", "on")}
    taken: set[int] = set()
    servers: dict[str, Server] = {}
    try:
        for name, logging in (("off", "0"), ("on", "1")):
            servers[name] = start_our_server(config, model["model_dir"], work_dir, taken, f"served log {name}", {
                "FEATURESTACK_SERVED_LOG": logging, "FEATURESTACK_SERVED_LOG_FLUSH_INTERVAL_S": FLUSH_INTERVAL_S,
                "FEATURESTACK_DATA_DIR": str(lakes[name])})
            taken.add(servers[name].port)
        wait_ready(list(servers.values()))
        print(f"bench: serving-log: servers ready in {servers['off'].ready_s:.1f} s (log off) and "
              f"{servers['on'].ready_s:.1f} s (log on)", flush=True)

        rate, seconds = args.serving_rate, args.serving_seconds
        single_requests = max(1, int(round(rate * seconds)))
        single = sample_entities(data, single_requests, seed=7)
        amounts = np.round(np.random.default_rng(7).lognormal(3.0, 1.0, single_requests), 2).tolist()
        batch = sample_entities(data, BATCH_ROWS, seed=8)
        batch_amounts = np.round(np.random.default_rng(8).lognormal(3.0, 1.0, BATCH_ROWS), 2).tolist()
        single_bodies = [ours_body([u], [m], [a]) for u, m, a in zip(single["user_id"], single["merchant_id"], amounts)]
        batch_bodies = [ours_body(batch["user_id"], batch["merchant_id"], batch_amounts)]

        with httpx.Client(timeout=120) as client:
            answers = {name: client.post(server.url + "/predict", json=batch_bodies[0]) for name, server in servers.items()}
        same_predictions = all(answer.status_code == 200 for answer in answers.values()) \
            and answers["off"].json() == answers["on"].json()
        for server in servers.values():  # warm-up outside the timed runs
            _load(server, "/predict", single_bodies[:50], 50, 1, None)
            _load(server, "/predict", batch_bodies, 2, 1, None)

        def side(name: str, bodies: list[dict], requests: int, concurrency: int, rate_: float | None):
            return lambda: _load(servers[name], "/predict", bodies, requests, concurrency, rate_)

        single_runs = alternate(args.reps, [
            ("off", side("off", single_bodies, single_requests, OPEN_LOOP_CONCURRENCY, rate)),
            ("on", side("on", single_bodies, single_requests, OPEN_LOOP_CONCURRENCY, rate)),
        ])
        batch_runs = alternate(args.reps, [
            ("off", side("off", batch_bodies, args.serving_batch_requests, 1, None)),
            ("on", side("on", batch_bodies, args.serving_batch_requests, 1, None)),
        ])
        text = httpx.get(servers["on"].url + "/metrics", timeout=30).text
        scored = int(_metric_sum(text, 'featurestack_scored_rows_total{view="user_velocity"}'))
    finally:
        for server in servers.values():
            server.stop()  # SIGTERM: the logging side flushes its buffer on the way out
    logged = {name: _served_rows(lake) for name, lake in lakes.items()}
    dropped = int(_metric_sum(text, "featurestack_served_log_dropped_rows_total"))
    log_complete = logged["on"] == scored and dropped == 0 and logged["off"] == 0
    print(f"bench: serving-log: predictions identical: {same_predictions}; rows scored {scored:,}, logged {logged['on']:,}, "
          f"dropped {dropped:,}; the side without the log wrote {logged['off']:,}", flush=True)

    rows = []
    for kind, runs in (("single", single_runs), ("batch", batch_runs)):
        failures = {name: sum(r["failures"] for r in rs) for name, rs in runs.items()}
        pooled = {name: _pooled(rs) for name, rs in runs.items()}
        achieved = {name: round(float(np.median([r["requests_per_s"] for r in rs])), 1) for name, rs in runs.items()}
        p99 = f"p99 off {_ms(pooled['off'][1])} / on {_ms(pooled['on'][1])}"
        if kind == "single":
            work = f"served-feature log on vs off: 1 entity/request at {rate:g} req/s open loop, p50 [{p99}]"
        else:
            work = f"served-feature log on vs off: batch of {BATCH_ROWS} candidates/request closed loop, p50 [{p99}]"
        strip = {name: [{k: v for k, v in r.items() if k != "latencies"} for r in rs] for name, rs in runs.items()}
        rows.append(row(
            work, "featurestack serve, served-feature log off", strip["off"], strip["on"],
            same_predictions and log_complete and not any(failures.values()),
            ours_label=f"featurestack serve, served-feature log on (flushed every {FLUSH_INTERVAL_S} s)",
            baseline_p50_pooled_s=round(pooled["off"][0], 5), ours_p50_pooled_s=round(pooled["on"][0], 5),
            baseline_p99_s=round(pooled["off"][1], 5), ours_p99_s=round(pooled["on"][1], 5),
            p99_ratio=round(pooled["off"][1] / pooled["on"][1], 2) if pooled["on"][1] else None,
            baseline_rate_rps=achieved["off"], ours_rate_rps=achieved["on"],
            baseline_failures=failures["off"], ours_failures=failures["on"],
            requests_per_side=sum(len(r["latencies"]) for r in runs["on"]),
            predictions_identical=same_predictions, rows_scored=scored, rows_logged=logged["on"], rows_dropped=dropped,
            rows_logged_with_log_off=logged["off"], model=model,
            note="ratio and p99_ratio: log off / log on (1.0: logging costs nothing measurable; below 1: it costs); "
                 "latency measured by the client from the scheduled send time (open loop) or the send (closed loop)",
            target="p99 unchanged within noise: report the ratios", target_met=None,
        ))
    return rows
