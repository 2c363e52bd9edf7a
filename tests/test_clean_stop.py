"""`featurestack dev`, `serve` and `catalog` stop on Ctrl-C (SIGINT) and on SIGTERM within
STOP_DEADLINE_S, cancel what is in flight, and leave no process behind (core/shutdown.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import dagster as dg
import psutil
import pytest
import redis

from assets.sensors import AUTOMATION_SENSOR
from core.redis_server import free_port
from core.settings import PROJECT_ROOT
from core.shutdown import STOP_DEADLINE_S
from serving_support import running_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEATURESTACK = [sys.executable, "-m", "featurestack.cli"]
SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


def _wait_for(condition, seconds: float, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"exited {process.returncode} while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.5)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _stop_and_check_nothing_is_left(process: subprocess.Popen, signum: int) -> int:
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    process.send_signal(signum)
    returncode = process.wait(timeout=STOP_DEADLINE_S)  # the promise: stopped within the deadline
    survivors = []
    for member in tree[1:]:
        try:
            if member.is_running() and member.status() != psutil.STATUS_ZOMBIE:
                survivors.append(f"{member.pid} {' '.join(member.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    assert survivors == [], survivors
    return returncode


@pytest.mark.parametrize("signum", SIGNALS)
def test_serve_stops_cleanly(serving_settings, signum):
    environment = {**os.environ, "FEATURESTACK_STATE_DIR": str(serving_settings.state_dir), "REDIS_URL": serving_settings.redis_url,
                   "FEATURESTACK_FEAST_PROJECT": serving_settings.feast_project,
                   "FEATURESTACK_MODEL_DIR": serving_settings.serving.model_dir}
    with running_server(environment) as (_base, server):
        assert _stop_and_check_nothing_is_left(server, signum) == 0


@pytest.mark.parametrize("signum", SIGNALS)
def test_catalog_stops_cleanly(saved, signum):
    path, env = saved
    port = free_port()
    server = subprocess.Popen([*FEATURESTACK, "catalog", "--snapshot", str(path), "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _answers(f"http://127.0.0.1:{port}/api/features"), 60, "catalog page", server)
        assert _stop_and_check_nothing_is_left(server, signum) == 0
    finally:
        if server.poll() is None:
            server.kill()


@pytest.mark.parametrize("signum", SIGNALS)
def test_dev_stops_cleanly_and_cancels_its_in_flight_run(tmp_path, redis_url, signum):
    """dagster dev launches the freshness run at start (its sensor); stopping dev while that run is
    in flight cancels it (CANCELED, not failed) and ends webserver, daemon, code server and run worker."""
    state = tmp_path / "state"
    env = {**os.environ, "FEATURESTACK_STATE_DIR": str(state), "REDIS_URL": redis_url,
           "FEATURESTACK_FEAST_PROJECT": f"fs_stop_{uuid.uuid4().hex[:8]}"}
    env.pop("FEATURESTACK_DATA_DIR", None)
    env.pop("DAGSTER_HOME", None)
    port = free_port()
    dev = subprocess.Popen([*FEATURESTACK, "dev", "--port", str(port)], cwd=PROJECT_ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _answers(f"http://127.0.0.1:{port}/server_info"), 600, "Dagster webserver", dev)
        instance = dg.DagsterInstance.from_config(str(state / "dagster"))
        in_flight = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]

        def a_run_in_flight() -> bool:
            return bool(instance.get_runs(filters=dg.RunsFilter(statuses=in_flight)))

        _wait_for(a_run_in_flight, 600, "run in flight", dev)
        running = instance.get_runs(filters=dg.RunsFilter(statuses=in_flight))
        stopping_at = time.time()
        assert _stop_and_check_nothing_is_left(dev, signum) == 0
        for run in running:
            record = instance.get_run_record_by_id(run.run_id)
            if record.end_time is not None and record.end_time < stopping_at:
                continue  # it ended on its own between the listing and the stop (a busy machine)
            assert record.dagster_run.status == dg.DagsterRunStatus.CANCELED, (run.job_name, record.dagster_run.status)
        assert instance.get_runs(filters=dg.RunsFilter(statuses=[*in_flight, dg.DagsterRunStatus.CANCELING])) == []
        # The daemon of `featurestack dev` evaluated the declarative automation (online follows offline).
        sensors = {state.instigator_name: state for state in instance.all_instigator_state()}
        automation = sensors[AUTOMATION_SENSOR]
        assert instance.get_ticks(automation.instigator_origin_id, automation.selector_id, limit=1)
    finally:
        if dev.poll() is None:
            dev.kill()


@pytest.mark.parametrize("signum", SIGNALS)
def test_stream_stops_cleanly_and_leaves_its_group(platform, signum):
    settings = platform.settings
    environment = {**os.environ, "FEATURESTACK_STATE_DIR": str(settings.state_dir), "REDIS_URL": platform.redis.url,
                   "FEATURESTACK_FEAST_PROJECT": settings.feast_project}
    processor = subprocess.Popen([*FEATURESTACK, "stream"], env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert processor.stdout.readline().startswith("stream processor ")
        members = f"featurestack:{settings.feast_project}:events:transactions:user_id:windows:user_velocity:members"
        client = redis.Redis.from_url(platform.redis.url)
        _wait_for(lambda: client.zcard(members) == 1, 30, "the processor joining its group", processor)
        assert _stop_and_check_nothing_is_left(processor, signum) == 0
        assert client.zcard(members) == 0  # it left the group: its partitions go to the others at once
    finally:
        if processor.poll() is None:
            processor.kill()
