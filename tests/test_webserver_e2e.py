"""End to end through a real dagster-webserver: the test starts it on a free port with a temporary
DAGSTER_HOME, launches daily_features for one partition over GraphQL, waits for the run and reads the
asset check results back over GraphQL.

No daemon is needed: the instance uses the DefaultRunCoordinator (set explicitly in dagster.yaml), so
launchRun hands the run straight to the DefaultRunLauncher, which runs it in a subprocess of the
webserver's code server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid

import dagster as dg
import pytest

from core.settings import PROJECT_ROOT
from core.redis_server import free_port
from support import delete_project_keys, platform_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_TIMEOUT_S = 600  # a busy 2-core machine: each step is a process that imports Dagster, Feast and Spark

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
RUN = """query Run($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }"""
CHECKS = """
query Checks($path: [String!]!, $name: String!, $partition: String) {
  assetCheckExecutions(assetKey: {path: $path}, checkName: $name, partition: $partition, limit: 5) {
    runId status evaluation { success description }
  }
}"""


def _graphql(port: int, query: str, variables: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory, redis_url, spark):
    from assets.definitions import SETUP_JOB, build_definitions
    from core.settings import load_settings
    from pipelines.generator import generate

    project = f"fs_web_{uuid.uuid4().hex[:8]}"
    state = tmp_path_factory.mktemp("webserver")
    home = state / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
        "telemetry:\n  enabled: false\n"
    )
    process = None
    with platform_environment(state, project, redis_url, DAGSTER_HOME=str(home), SPARK_MASTER="local[2]",
                              SPARK_SHUFFLE_PARTITIONS="2", PYSPARK_PYTHON=sys.executable):
        try:
            settings = load_settings()
            generate(settings.landing_dir, settings.start_date, 1, 300, seed=5)
            # The dimension tables and the Feast registry, in-process (this session's Spark) on the same instance.
            instance = dg.DagsterInstance.get()
            assert build_definitions(settings).resolve_job_def(SETUP_JOB).execute_in_process(instance=instance).success
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "dagster_webserver", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
                cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"dagster-webserver did not come up: {process.stderr.read() if process.poll() is not None else 'timeout'}")
                    time.sleep(1)
            yield {"port": port, "settings": settings}
        finally:
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            delete_project_keys(redis_url, project)


def _failures(run_id: str) -> list[str]:
    """Why a run failed, from the instance the webserver shares with this test."""
    records = dg.DagsterInstance.get().get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    failures = []
    for record in records:
        error = record.event_log_entry.dagster_event.event_specific_data.error
        while error.cause is not None:
            error = error.cause
        failures.append(f"{record.event_log_entry.step_key}: {error.cls_name}: {error.message}")
    return failures


def test_launch_daily_features_over_graphql_and_read_check_results(webserver):
    port, day = webserver["port"], webserver["settings"].start_date.isoformat()
    params = {
        "selector": {"repositoryLocationName": "featurestack", "repositoryName": "__repository__", "jobName": "daily_features"},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
    }
    launched = _graphql(port, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = None
    while time.monotonic() < deadline:
        status = _graphql(port, RUN, {"runId": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    assert status == "SUCCESS", _failures(run_id)
    expected = [
        (["raw", "transactions"], "expectation_suite"),
        (["features", "user_velocity"], "expectation_suite"),
        (["features", "merchant_risk"], "expectation_suite"),
        (["online", "user_velocity"], "online_offline_consistency"),
        (["online", "merchant_risk"], "online_offline_consistency"),
    ]
    for path, name in expected:
        executions = _graphql(port, CHECKS, {"path": path, "name": name, "partition": day})["assetCheckExecutions"]
        mine = [e for e in executions if e["runId"] == run_id]
        assert mine and mine[0]["status"] == "SUCCEEDED" and mine[0]["evaluation"]["success"], (path, name, executions)
    consistency = _graphql(port, CHECKS, {"path": ["online", "user_velocity"], "name": "online_offline_consistency", "partition": day})
    assert "mismatch rate 0.00%" in consistency["assetCheckExecutions"][0]["evaluation"]["description"]
