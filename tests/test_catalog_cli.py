"""`featurestack catalog search TEXT` and `featurestack catalog --snapshot FILE` as a user runs them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


pytestmark = pytest.mark.integration

FEATURESTACK = [sys.executable, "-m", "featurestack.cli"]


def test_search_prints_matches_from_the_saved_snapshot(saved):
    _, env = saved
    result = subprocess.run([*FEATURESTACK, "catalog", "search", "spend", "day"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("card_spend:spend_1d ") and "cards@example.com" in lines[0] and "freshness=fresh" in lines[0]
    assert "catalog snapshot" in result.stderr
    as_json = subprocess.run([*FEATURESTACK, "catalog", "search", "--json", "credit"], env=env, capture_output=True, text=True, timeout=60)
    assert [f["id"] for f in json.loads(as_json.stdout)] == ["card_limits:credit_limit"]
    nothing = subprocess.run([*FEATURESTACK, "catalog", "search", "zzz-none"], env=env, capture_output=True, text=True, timeout=60)
    assert nothing.returncode == 1 and "no feature matches 'zzz-none'" in nothing.stderr


def test_serve_a_snapshot_file(saved):
    path, env = saved
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([*FEATURESTACK, "catalog", "--snapshot", str(path), "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/feature-services/spend_model_v1", timeout=2) as response:
                    service = json.loads(response.read())
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                assert time.monotonic() < deadline, "catalog server did not answer"
                time.sleep(0.2)
        assert service["models"] == ["spend_mlp"]
        refresh = urllib.request.Request(f"http://127.0.0.1:{port}/api/refresh", method="POST")
        with pytest.raises(urllib.error.HTTPError) as fixed:
            urllib.request.urlopen(refresh, timeout=5)
        assert fixed.value.code == 409  # a snapshot file is served as is
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert Path(path).exists()
