"""After a platform run, plain Feast works as a user runs it: `FeatureStore(repo_path="feature_repo")` in
their own script and the bare `feast` CLI (including `feast ui` and `feast serve`) inside feature_repo/,
in a clean environment (no featurestack variable), on the platform's registry, offline data and Redis.

The user's checkout is reproduced under tmp: feature_repo/ copied as committed (its feature_store.yaml
link included) next to a `.state` that is the test platform's state folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.redis_server import free_port
from core.settings import FEATURE_REPO_DIR

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent
USER_SCRIPT = """
import json, sys
from feast import FeatureStore

store = FeatureStore(repo_path="feature_repo")
entity = json.loads(sys.argv[1])
online = store.get_online_features(features=store.get_feature_service("fraud_detection_v1"), entity_rows=[entity]).to_dict()
print(json.dumps({"project": store.project, "online": online}, default=str))
"""


def _clean_environment(home: Path) -> dict[str, str]:
    return {"PATH": f"{VENV_BIN}{os.pathsep}/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def user_checkout(platform, tmp_path_factory) -> Path:
    checkout = tmp_path_factory.mktemp("checkout")
    shutil.copytree(FEATURE_REPO_DIR, checkout / "feature_repo", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    (checkout / ".state").symlink_to(platform.settings.state_dir)
    assert (checkout / "feature_repo" / "feature_store.yaml").is_symlink()
    return checkout


def _last_entity(platform) -> dict:
    raw = platform.settings.raw_dir / "transactions"
    table = pq.read_table(sorted(raw.glob("date=*"))[-1])
    last = table.slice(table.num_rows - 1).to_pylist()[0]
    return {"user_id": last["user_id"], "merchant_id": last["merchant_id"]}


def test_a_user_script_reads_what_the_platform_wrote(platform, user_checkout):
    from core.feast_repo import open_store

    entity = _last_entity(platform)
    result = subprocess.run([sys.executable, "-c", USER_SCRIPT, json.dumps(entity)], cwd=user_checkout,
                            env=_clean_environment(user_checkout), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["project"] == platform.settings.feast_project
    store = open_store(platform.settings, platform.redis.url)
    expected = store.get_online_features(features=store.get_feature_service("fraud_detection_v1"), entity_rows=[entity]).to_dict()
    assert seen["online"] == json.loads(json.dumps(expected, default=str))
    assert seen["online"]["txn_count_7d"][0] is not None  # really read from the platform's Redis


def test_the_bare_feast_cli_lists_the_platform_registry(platform, user_checkout):
    result = subprocess.run(["feast", "feature-views", "list"], cwd=user_checkout / "feature_repo",
                            env=_clean_environment(user_checkout), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "user_velocity" in result.stdout and "merchant_risk" in result.stdout


@contextlib.contextmanager
def _feast_server(command: list[str], checkout: Path, probe: str):
    """`feast <command>` in feature_repo/ with a clean environment, until `probe` answers (or it exits)."""
    process = subprocess.Popen(["feast", *command], cwd=checkout / "feature_repo", env=_clean_environment(checkout),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"feast {' '.join(command)} exited {process.returncode}: {process.stdout.read()[-3000:]}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                with urllib.request.urlopen(probe, timeout=5):
                    break
            time.sleep(0.5)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_feast_ui_serves_its_page_and_the_platform_project(platform, user_checkout):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with _feast_server(["ui", "-h", "127.0.0.1", "-p", str(port)], user_checkout, f"{base}/"):
        with urllib.request.urlopen(f"{base}/", timeout=30) as response:
            page = response.read().decode()
        assert response.status == 200 and "<div id=\"root\">" in page.replace("'", '"')
        with urllib.request.urlopen(f"{base}/projects-list.json", timeout=30) as response:
            projects = json.load(response)
        assert platform.settings.feast_project in [project["id"] for project in projects["projects"]]


def test_feast_serve_answers_online_features_from_the_platform_redis(platform, user_checkout):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    entity = _last_entity(platform)
    with _feast_server(["serve", "-h", "127.0.0.1", "-p", str(port)], user_checkout, f"{base}/health"):
        body = json.dumps({"feature_service": "fraud_detection_v1",
                           "entities": {name: [value] for name, value in entity.items()}}).encode()
        request = urllib.request.Request(f"{base}/get-online-features", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
    names = answer["metadata"]["feature_names"]
    values = dict(zip(names, (result["values"][0] for result in answer["results"])))
    assert values["txn_count_7d"] is not None


def test_the_generated_config_holds_no_secret(tmp_path):
    from dataclasses import replace

    from core.feast_repo import render_feast_config
    from core.settings import load_settings

    settings = replace(load_settings(), state_dir=tmp_path)
    plain = render_feast_config(settings, "redis://127.0.0.1:6390/2")
    settings_lines = [line for line in plain.splitlines() if not line.startswith("#")]
    assert "connection_string: 127.0.0.1:6390,db=2" in plain and not any("${" in line for line in settings_lines)
    assert f"registry: {settings.registry_path}" in plain and f"project: {settings.feast_project}" in plain
    guarded = render_feast_config(settings, "redis://:hunter2@127.0.0.1:6390/2")
    assert "hunter2" not in guarded and "connection_string: ${FEATURESTACK_FEAST_REDIS}" in guarded
    assert "FEATURESTACK_FEAST_REDIS carries a password" in guarded


def test_the_generated_config_enables_feasts_mlflow_on_the_platforms_store(tmp_path):
    from dataclasses import replace

    import yaml

    from core.feast_repo import render_feast_config
    from core.settings import load_settings

    settings = replace(load_settings(), state_dir=tmp_path, mlflow_tracking_uri="")
    config = yaml.safe_load(render_feast_config(settings, "redis://127.0.0.1:6390/2"))
    assert config["mlflow"] == {"enabled": True, "tracking_uri": f"sqlite:///{tmp_path}/mlflow/mlflow.db", "auto_log": True}
    guarded = render_feast_config(replace(settings, mlflow_tracking_uri="postgresql+psycopg://u:hunter2@db:5432/mlflow"),
                                  "redis://127.0.0.1:6390/2")
    assert "hunter2" not in guarded and "tracking_uri: ${FEATURESTACK_MLFLOW_TRACKING_URI}" in guarded
