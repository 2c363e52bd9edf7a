"""Serving: our /predict (featurestack serve) against `feast serve` answering the same feature lookups
on the same Redis and the same Feast project (issue 6, target 5).

Both servers run as subprocesses on free ports, started here and always stopped here:
- Feast's Python feature server (`feast -c <repo> serve`, gunicorn, one worker) over a feature_store.yaml
  naming the benchmark's registry, project and Redis;
- `featurestack serve` (uvicorn, serving/app.py) with a model artifact over the benchmark's project.

Work A: one entity per request at a fixed request rate (open loop, serving/loadtest.py): latency counts
from each request's scheduled send time. Work B: 1000 candidates per request, closed loop. The sides
alternate, on the same sampled entities. Feast answers /get-online-features with the feature service;
ours answers /predict, i.e. the same feature read *plus* the model.

Before anything is timed, the features each server returns for a sample of entities are compared
(feast serve's /get-online-features against our /features; NaN == null).
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.data import BenchData

SERVICE = "fraud_detection_v1"
USER_MEAN_FEATURE = "user_velocity:amount_mean_7d"
MODEL_VERSION = "bench-untrained"
READY_TIMEOUT_S = 180
BATCH_ROWS = 1000
OPEN_LOOP_CONCURRENCY = 64  # in-flight bound of the open-loop client: far above rate x latency


# --------------------------------------------------------------------------------------------------
# the model artifact (run inside the "ours" worker: OurSide.serving_model)


def write_model(side, model_dir: str) -> dict:
    """A model artifact in the layout `featurestack train` writes (model.pt, weights.npz, manifest.json)
    over the benchmark project: the served FraudMLP architecture, its input scaler fitted on the
    benchmark's online features, weights untrained (the serving cost does not depend on them)."""
    import torch

    from core.artifacts import ModelManifest, ViewPin
    from onlinestore.online_reader import OnlineFeatureReader
    from training.features import REQUEST_FEATURES, model_inputs
    from training.model import FraudMLP, save_numpy_weights
    from training.train import view_fingerprint

    from bench.sides import sample_entities

    store, project = side.store, side.config["project"]
    service = store.get_feature_service(SERVICE)
    refs = [f"{p.name_to_use()}:{f.name}" for p in service.feature_view_projections for f in p.features]
    views = list(dict.fromkeys(ref.split(":")[0] for ref in refs))
    layouts = side._layouts()
    reader = OnlineFeatureReader(side.client, project, [layouts[v] for v in views], refs)
    entities = sample_entities(side.data, 2000, seed=11)
    features = reader.read({k: np.asarray(v, np.int64) for k, v in entities.items()})
    amounts = np.round(np.random.default_rng(11).lognormal(3.0, 1.0, len(entities["user_id"])), 2)
    inputs = model_inputs(features.values, features.missing_entity, amounts, refs.index(USER_MEAN_FEATURE))

    path = Path(model_dir)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = FraudMLP(inputs.shape[1])
    model.fit_scaler(torch.from_numpy(inputs))
    torch.save(model.state_dict(), path / "model.pt")
    save_numpy_weights(model, path / "weights.npz")
    ModelManifest(
        model="fraud_mlp", version=MODEL_VERSION, project=project, feature_service=SERVICE, feature_refs=tuple(refs),
        user_mean_feature=USER_MEAN_FEATURE, request_features=tuple(REQUEST_FEATURES), n_inputs=int(inputs.shape[1]),
        feature_views={view: ViewPin(fingerprint=view_fingerprint(store.get_feature_view(view)),
                                     join_keys=layouts[view].join_keys, features=layouts[view].features)
                       for view in views},
        note="benchmark artifact: FraudMLP with its scaler fitted on the benchmark's online features, weights untrained",
    ).write(path)
    return {"model_dir": str(path), "features": len(refs), "n_inputs": int(inputs.shape[1])}


# --------------------------------------------------------------------------------------------------
# the two servers


FEATURE_STORE_YAML = """\
# feast serve of the serving benchmark: the benchmark's registry, project and Redis
project: {project}
provider: local
registry: {registry}
entity_key_serialization_version: 3
offline_store:
  type: duckdb
online_store:
  type: redis
  connection_string: ${{FEATURESTACK_BENCH_FEAST_REDIS}}
"""


class Server:
    """A server subprocess with its log, readiness probe and the peak memory of its process tree."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, ready_path: str, log_path: Path):
        self.name, self.port, self.ready_path = name, port, ready_path
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=Path(__file__).resolve().parent.parent)
        self.ready_s: float | None = None

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def poll_ready(self, deadline: float) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode} before it was ready; "
                               f"{self.log_path}:\n{self._log_tail()}")
        try:
            if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                self.ready_s = round(time.perf_counter() - self.started, 2)
                return True
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{self.name} not ready on {self.url}{self.ready_path} within {READY_TIMEOUT_S} s; "
                               f"{self.log_path}:\n{self._log_tail()}")
        return False

    def pids(self) -> list[int]:
        try:
            import psutil

            return [self.process.pid] + [c.pid for c in psutil.Process(self.process.pid).children(recursive=True)]
        except Exception:
            return [self.process.pid]

    def memory_reset(self) -> None:
        for pid in self.pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass

    def memory_peak_mib(self) -> float:
        """Sum of VmHWM over the process tree (as bench/worker.py measures a side; pages a fork shares are
        counted in each process, so see pss_mib too)."""
        from bench.worker import _hwm_kib

        return round(sum(_hwm_kib(pid) for pid in self.pids()) / 1024, 1)

    def pss_mib(self) -> float:
        """Current proportional set size of the tree: shared pages split between their processes."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return round(total / 1024, 1)

    def stop(self) -> None:
        """SIGTERM the server (gunicorn stops its workers), then SIGKILL whatever of its tree is left."""
        pids = self.pids()
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
        finally:
            for pid in pids[1:]:  # children that outlived their parent (by their own pids)
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.log.close()


def _feast_executable() -> str:
    local = Path(sys.executable).parent / "feast"
    found = str(local) if local.exists() else shutil.which("feast")
    if not found:
        raise RuntimeError("the `feast` command is not installed next to this Python")
    return found


def _free_port(taken: set[int]) -> int:
    from core.redis_server import free_port

    port = free_port()
    while port in taken:
        port = free_port()
    return port


def start_feast_server(config: dict, work_dir: Path, taken: set[int]) -> Server:
    from core.redis_server import feast_connection_string

    repo = work_dir / "feast_serve_repo"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(FEATURE_STORE_YAML.format(project=config["project"], registry=config["registry"]))
    port = _free_port(taken)
    # One gunicorn worker (ours is one uvicorn process); --max-requests 0: gunicorn's default restarts
    # a worker every 1000 requests, mid-run.
    return Server(
        "feast serve",
        [_feast_executable(), "-c", str(repo), "serve", "-h", "127.0.0.1", "-p", str(port), "-w", "1",
         "--no-access-log", "--max-requests", "0"],
        {**_server_env(), "FEATURESTACK_BENCH_FEAST_REDIS": feast_connection_string(config["redis_url"])},
        port, "/health", work_dir / "feast_serve.log",
    )


def start_our_server(config: dict, model_dir: str, work_dir: Path, taken: set[int], name: str = "featurestack serve",
                     env: dict[str, str] | None = None) -> Server:
    """`env`: settings of this server (its state folder, and so its lake, is its own: work_dir/<name>_state)."""
    port = _free_port(taken)
    slug = name.replace(" ", "_")
    return Server(
        name,
        [sys.executable, "-m", "featurestack.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        {**_server_env(), "FEATURESTACK_MODEL_DIR": model_dir, "REDIS_URL": config["redis_url"],
         "FEATURESTACK_FEAST_PROJECT": config["project"], "FEATURESTACK_STATE_DIR": str(work_dir / f"{slug}_state"), **(env or {})},
        port, "/readyz", work_dir / f"{slug}.log",
    )


def _server_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "FEATURESTACK_API_KEY"}  # neither side checks an API key


def wait_ready(servers: list[Server], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll every server until each answers its readiness probe (each one's time from its own start)."""
    deadline = time.monotonic() + timeout_s
    waiting = list(servers)
    while waiting:
        for server in list(waiting):
            if server.poll_ready(deadline):
                waiting.remove(server)
        if waiting:
            time.sleep(0.1)


# --------------------------------------------------------------------------------------------------
# requests


def feast_body(users: list[int], merchants: list[int], full_names: bool = False) -> dict:
    body = {"feature_service": SERVICE, "entities": {"user_id": list(users), "merchant_id": list(merchants)}}
    if full_names:
        body["full_feature_names"] = True
    return body


def ours_body(users: list[int], merchants: list[int], amounts: list[float]) -> dict:
    rows = [{"user_id": u, "merchant_id": m, "amount": a} for u, m, a in zip(users, merchants, amounts)]
    return rows[0] if len(rows) == 1 else {"transactions": rows}


def _number(value) -> float:
    if value is None:
        return math.nan
    return float(value)  # Feast's JSON may spell int64 as a string


def compare_features(feast_url: str, ours_url: str, users: list[int], merchants: list[int]) -> dict:
    """feast serve's /get-online-features vs our /features for the same entity rows: equal feature names
    and values (as float64; null == NaN)."""
    with httpx.Client(timeout=120) as client:
        theirs = client.post(feast_url + "/get-online-features", json=feast_body(users, merchants, full_names=True))
        ours = client.post(ours_url + "/features",
                           json={"entities": [{"user_id": u, "merchant_id": m} for u, m in zip(users, merchants)]})
    if theirs.status_code != 200 or ours.status_code != 200:
        return {"identical": False, "problems": [f"feast serve {theirs.status_code}: {theirs.text[:300]}",
                                                 f"ours {ours.status_code}: {ours.text[:300]}"]}
    theirs, ours = theirs.json(), ours.json()
    refs = ours["feature_refs"]
    feast_names = theirs["metadata"]["feature_names"]
    columns = dict(zip(feast_names, theirs["results"]))
    wanted = [ref.replace(":", "__") for ref in refs]
    problems = []
    if sorted(set(feast_names) - {"user_id", "merchant_id"}) != sorted(wanted):
        problems.append(f"feature names differ: feast {sorted(feast_names)} vs ours {sorted(wanted)}")
        return {"identical": False, "problems": problems, "rows": len(users), "features": len(refs)}
    feast_matrix = np.array([[_number(v) for v in columns[name]["values"]] for name in wanted], np.float64).T
    ours_matrix = np.array([[_number(row["features"][ref]) for ref in refs] for row in ours["rows"]], np.float64)
    same_shape = feast_matrix.shape == ours_matrix.shape
    equal = same_shape and bool(np.array_equal(feast_matrix, ours_matrix, equal_nan=True))
    if not equal:
        if not same_shape:
            problems.append(f"shapes differ: feast {feast_matrix.shape} vs ours {ours_matrix.shape}")
        else:
            differ = ~((feast_matrix == ours_matrix) | (np.isnan(feast_matrix) & np.isnan(ours_matrix)))
            row, col = np.argwhere(differ)[0]
            problems.append(f"{int(differ.sum())} values differ, e.g. {wanted[col]} of user {users[row]} / merchant "
                            f"{merchants[row]}: feast {feast_matrix[row, col]} vs ours {ours_matrix[row, col]}")
    return {"identical": equal, "problems": problems, "rows": len(users), "features": len(refs),
            "nulls": int(np.isnan(ours_matrix).sum()) if same_shape else None}


def _load(server: Server, path: str, bodies: list[dict], requests: int, concurrency: int, rate: float | None) -> dict:
    from serving.loadtest import run_load

    server.memory_reset()
    report = asyncio.run(run_load(server.url, requests, concurrency, 1, rate, 0, 0, path=path, bodies=bodies, keep_latencies=True))
    latencies = np.array(report.pop("latencies_s"))
    return {"seconds": float(np.percentile(latencies, 50)), "latencies": latencies, "failures": report["failures"],
            "requests_per_s": report["requests_per_s"], "peak_mib": server.memory_peak_mib(), "pss_mib": server.pss_mib()}


def _pooled(runs: list[dict]) -> tuple[float, float]:
    latencies = np.concatenate([r["latencies"] for r in runs])
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def bench_serving(args, data: BenchData, config: dict, ours_worker, work_dir: Path, row, alternate) -> list[dict]:
    """Both rows of the serving benchmark (row/alternate: bench.__main__'s _row and _alternate)."""
    from bench.sides import sample_entities

    taken: set[int] = set()
    feast = start_feast_server(config, work_dir, taken)
    ours = None
    try:
        taken.add(feast.port)
        # The model artifact is made while feast serve starts (importing feast takes the longest).
        model = ours_worker.call("serving_model", model_dir=str(work_dir / "serving_model"))
        ours = start_our_server(config, model["model_dir"], work_dir, taken)
        wait_ready([feast, ours])
        ready = {"feast": feast.ready_s, "ours": ours.ready_s}
        runtime = httpx.get(ours.url + "/readyz", timeout=10).json()
        print(f"bench: serving: feast serve ready in {ready['feast']:.1f} s, featurestack serve in {ready['ours']:.1f} s", flush=True)

        rate, seconds = args.serving_rate, args.serving_seconds
        single_requests = max(1, int(round(rate * seconds)))
        single = sample_entities(data, single_requests, seed=5)
        amounts = np.round(np.random.default_rng(5).lognormal(3.0, 1.0, single_requests), 2).tolist()
        batch = sample_entities(data, BATCH_ROWS, seed=6)
        batch_amounts = np.round(np.random.default_rng(6).lognormal(3.0, 1.0, BATCH_ROWS), 2).tolist()

        # The same answers first: the batch's rows and (up to 1000 of) the single-request entities.
        check_rows = min(single_requests, 1000)
        check = compare_features(feast.url, ours.url, batch["user_id"] + single["user_id"][:check_rows],
                                 batch["merchant_id"] + single["merchant_id"][:check_rows])
        print(f"bench: serving: feature values of {check.get('rows')} entity rows identical: {check['identical']}"
              + (f" ({'; '.join(check['problems'])})" if check["problems"] else ""), flush=True)

        single_bodies = {
            "feast": [feast_body([u], [m]) for u, m in zip(single["user_id"], single["merchant_id"])],
            "ours": [ours_body([u], [m], [a]) for u, m, a in zip(single["user_id"], single["merchant_id"], amounts)],
        }
        batch_bodies = {
            "feast": [feast_body(batch["user_id"], batch["merchant_id"])],
            "ours": [ours_body(batch["user_id"], batch["merchant_id"], batch_amounts)],
        }
        paths = {"feast": "/get-online-features", "ours": "/predict"}
        servers = {"feast": feast, "ours": ours}
        # Warm-up (connections, first-call caches) outside the timed runs.
        for name, server in servers.items():
            _load(server, paths[name], single_bodies[name][:50], 50, 1, None)
            _load(server, paths[name], batch_bodies[name], 2, 1, None)

        def side(name: str, bodies: dict, requests: int, concurrency: int, rate_: float | None):
            return lambda: _load(servers[name], paths[name], bodies[name], requests, concurrency, rate_)

        single_runs = alternate(args.reps, [
            ("feast", side("feast", single_bodies, single_requests, OPEN_LOOP_CONCURRENCY, rate)),
            ("ours", side("ours", single_bodies, single_requests, OPEN_LOOP_CONCURRENCY, rate)),
        ])
        batch_runs = alternate(args.reps, [
            ("feast", side("feast", batch_bodies, args.serving_batch_requests, 1, None)),
            ("ours", side("ours", batch_bodies, args.serving_batch_requests, 1, None)),
        ])
    finally:
        for server in (feast, ours):
            if server is not None:
                server.stop()

    rows = []
    for kind, runs in (("single", single_runs), ("batch", batch_runs)):
        failures = {name: sum(r["failures"] for r in rs) for name, rs in runs.items()}
        pooled = {name: _pooled(rs) for name, rs in runs.items()}
        achieved = {name: round(float(np.median([r["requests_per_s"] for r in rs])), 1) for name, rs in runs.items()}
        requests = sum(len(r["latencies"]) for r in runs["ours"])
        if kind == "single":
            work = (f"serving 1 entity/request at {rate:g} req/s open loop, p50 [p99 feast {_ms(pooled['feast'][1])} / "
                    f"ours {_ms(pooled['ours'][1])}; achieved {achieved['feast']:g}/{achieved['ours']:g} req/s]")
            # A side below the rate is saturated: its requests queue, and the open-loop latency grows with the run.
            extra = {"target_rate_rps": rate, "seconds_per_run": seconds,
                     "saturated": {name: achieved[name] < 0.95 * rate for name in achieved}}
        else:
            work = (f"serving batch of {BATCH_ROWS} candidates/request closed loop, p50 [p99 feast {_ms(pooled['feast'][1])} / "
                    f"ours {_ms(pooled['ours'][1])}; {achieved['feast']:g}/{achieved['ours']:g} req/s]")
            extra = {"rows_per_request": BATCH_ROWS}
        strip = {name: [{k: v for k, v in r.items() if k != "latencies"} for r in rs] for name, rs in runs.items()}
        rows.append(row(
            work, "feast serve /get-online-features (fraud_detection_v1)", strip["feast"], strip["ours"],
            check["identical"] and not any(failures.values()),
            ours_label=(f"featurestack serve /predict: the same features read + the model scored "
                        f"({runtime.get('runtime')} on {runtime.get('device')})"),
            baseline_p50_pooled_s=round(pooled["feast"][0], 5), ours_p50_pooled_s=round(pooled["ours"][0], 5),
            baseline_p99_s=round(pooled["feast"][1], 5), ours_p99_s=round(pooled["ours"][1], 5),
            baseline_rate_rps=achieved["feast"], ours_rate_rps=achieved["ours"],
            baseline_pss_mib=max(r["pss_mib"] for r in runs["feast"]), ours_pss_mib=max(r["pss_mib"] for r in runs["ours"]),
            baseline_failures=failures["feast"], ours_failures=failures["ours"], requests_per_side=requests,
            feature_values_identical=check["identical"], feature_check_rows=check.get("rows"), feature_check_nulls=check.get("nulls"), feature_check_problems=check["problems"],
            ready_s=ready, model=model, **extra,
            memory_note="peak MiB: VmHWM summed over the server's processes (feast serve: gunicorn master + 1 worker, "
                        "fork-shared pages counted twice); *_pss_mib: PSS after the run, shared pages split",
            note="latency measured by the client from the scheduled send time (open loop) or the send (closed loop); "
                 "identical = feast serve and our /features return equal values for the checked rows and every request got 200",
            target="report p50/p99 vs feast serve", target_met=None,
        ))
    return rows
