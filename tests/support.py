"""Helpers shared by test modules (test modules never import each other or conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import redis

from core.redis_server import project_keys
from core.settings import Settings, load_settings

PLATFORM_DAYS = 3
PLATFORM_TRANSACTIONS_PER_DAY = 1500


def delete_project_keys(url: str, project: str) -> None:
    """Remove only the keys of a test's own Feast project."""
    client = redis.Redis.from_url(url)
    keys = list(project_keys(client, project))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()


def platform_settings(state_dir: Path, project: str, redis_url: str, **changes) -> Settings:
    """The settings of a platform of its own: state folder (its lake inside), Feast project, Redis, local
    profile and file registry unless `changes` say otherwise."""
    # Its own MLflow store too (under the state folder): mlflow keeps the last URI it used in
    # os.environ (MLFLOW_TRACKING_URI), so another test's store could otherwise leak in.
    own = dict(state_dir=Path(state_dir), data_dir=Path(state_dir) / "data", feast_project=project, redis_url=redis_url,
               offline_profile="local", registry_db_url="", mlflow_tracking_uri="")
    return replace(load_settings(), **{**own, **changes})


@contextlib.contextmanager
def platform_environment(state_dir, project: str, redis_url: str, **extra: str) -> Iterator[None]:
    """The environment of a platform of its own (state folder, Feast project, Redis, local profile unless
    `extra` says otherwise), for the child processes a test starts (dagster-webserver); restored exactly
    afterwards."""
    saved_environment = dict(os.environ)
    os.environ.update({
        "FEATURESTACK_STATE_DIR": str(state_dir), "FEATURESTACK_FEAST_PROJECT": project,
        "FEATURESTACK_OFFLINE_PROFILE": "local", "REDIS_URL": redis_url, **extra,
    })
    os.environ.pop("FEATURESTACK_DATA_DIR", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # its own store, under the state folder
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_environment)


def wait_until(condition, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {seconds} s: {condition}")
        time.sleep(0.1)


def untimed_gate_policy(result):
    """The service's promotion gate with no latency budget: tests judge no timings (the latency is still
    measured on the serving runner and shown in the check's reason)."""
    from dataclasses import replace

    from training.promotion import GatePolicy

    return replace(GatePolicy.from_tags(result.manifest.feature_service, result.service_tags), max_batch_latency_ms=float("inf"))


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict]]]:
    """A local HTTP server that records every JSON POST: (its URL, the bodies received)."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()
        thread.join(timeout=10)
