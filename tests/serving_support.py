"""The serving tests' model artifact, online data and server process (shared by test_serving_app and
test_serving_overload; the `serving_settings` fixture in conftest.py uses them)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pyarrow as pa
import redis
import torch

from core.artifacts import ModelManifest, ViewPin
from core.redis_server import free_port
from core.settings import PROJECT_ROOT
from onlinestore.online_writer import publish_latest
from onlinestore.redis_layout import ViewLayout
from support import wait_until
from training.model import FraudMLP, save_numpy_weights

USERS = ViewLayout("user_velocity", (("user_id", "int64"),), (("txn_count_1h", "int64"), ("amount_mean_7d", "double")))
MERCHANTS = ViewLayout("merchant_risk", (("merchant_id", "int64"),), (("chargeback_rate_30d", "double"),))
REFS = ["user_velocity:txn_count_1h", "user_velocity:amount_mean_7d", "merchant_risk:chargeback_rate_30d"]
UNKNOWN = 987_654_321
TTL_SECONDS = {"user_velocity": 7 * 86_400, "merchant_risk": 2 * 86_400}  # as the real views declare


def publish_online_data(url: str, project: str) -> None:
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    client = redis.Redis.from_url(url)
    publish_latest(client, project, USERS, pa.table({
        "user_id": pa.array(range(1, 41), pa.int64()),
        "txn_count_1h": pa.array([u % 5 for u in range(1, 41)], pa.int64()),
        "amount_mean_7d": pa.array([None if u == 40 else 10.0 * u for u in range(1, 41)], pa.float64()),
        "event_timestamp": pa.array([now] * 40, pa.timestamp("us", tz="UTC")),
    }))
    publish_latest(client, project, MERCHANTS, pa.table({
        "merchant_id": pa.array(range(1, 31), pa.int64()),
        "chargeback_rate_30d": pa.array([m / 100 for m in range(1, 31)], pa.float64()),
        "event_timestamp": pa.array([now] * 30, pa.timestamp("us", tz="UTC")),
    }))
    client.close()


def write_model(model_dir, project: str, version: str = "test-v1", seed: int = 0) -> dict:
    """An artifact in the layout `featurestack train` writes: model.pt + weights.npz + manifest.json
    (another `seed`, other weights)."""
    model_dir.mkdir(parents=True)
    n_inputs = len(REFS) + 2 + 2  # store features, a missing flag per view, two request-time features
    torch.manual_seed(seed)
    model = FraudMLP(n_inputs)
    model.fit_scaler(torch.rand(64, n_inputs) * 100)  # a non-trivial scaler, like a trained one
    torch.save(model.state_dict(), model_dir / "model.pt")
    save_numpy_weights(model, model_dir / "weights.npz")
    manifest = ModelManifest(
        model="fraud_mlp", version=version, project=project, feature_service="fraud_detection_v1", feature_refs=tuple(REFS),
        user_mean_feature="user_velocity:amount_mean_7d", request_features=("amount_log", "amount_to_user_mean_7d"), n_inputs=n_inputs,
        feature_views={layout.name: ViewPin(fingerprint="hand-made", join_keys=layout.join_keys, features=layout.features,
                                            ttl_seconds=TTL_SECONDS[layout.name])
                       for layout in (USERS, MERCHANTS)},
    )
    manifest.write(model_dir)
    return manifest



def register_version(tracking_uri: str, artifact_root: Path, model_dir: Path, name: str = "fraud_mlp") -> str:
    """Log an artifact folder as an MLflow model (the torch module, the folder as its extra files) in a
    run of the experiment `serving-tests` (artifacts under `artifact_root`, never ./mlruns) and register
    it: the new version's number. As `featurestack train` registers its models."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    import mlflow.pytorch

    manifest = ModelManifest.read(model_dir)
    module = FraudMLP(manifest.n_inputs)
    module.load_state_dict(torch.load(model_dir / manifest.model_file))
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("serving-tests")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("serving-tests", artifact_root.as_uri())
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(experiment_id=experiment_id):
            logged = mlflow.pytorch.log_model(module, name="model", serialization_format="pickle", pip_requirements=["torch"],
                                              extra_files=[str(path) for path in sorted(model_dir.iterdir())])
        return str(mlflow.register_model(logged.model_uri, name).version)
    finally:
        mlflow.set_tracking_uri(previous)


class HeldReplies:
    """A TCP proxy in front of Redis that holds back every reply while `flowing` is clear: a request
    stays in flight exactly as long as a test wants (CLIENT PAUSE would hold the test's own commands too)."""

    def __init__(self, upstream_url: str):
        parsed = urlparse(upstream_url)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 6379)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = upstream_url.replace(parsed.netloc, f"127.0.0.1:{self.listener.getsockname()[1]}", 1)
        self.flowing = threading.Event()
        self.flowing.set()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, held: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                if held:
                    self.flowing.wait()
                target.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.flowing.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@contextlib.contextmanager
def running_server(environment: dict[str, str], ready_within_s: float = 60) -> Iterator[tuple[str, subprocess.Popen]]:
    """`featurestack serve` in its own process (uvicorn) on a free port: (base URL, process) once
    /readyz answers 200 (within `ready_within_s`: a registry adds mlflow's import); stopped afterwards."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "featurestack.cli", "serve", "--port", str(port)], cwd=PROJECT_ROOT,
                              env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert server.poll() is None, server.stdout.read().decode()
        try:
            return httpx.get(f"{base}/readyz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, seconds=ready_within_s)
        yield base, server
    finally:
        server.terminate()
        server.wait(timeout=30)
