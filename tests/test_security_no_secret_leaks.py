"""A Redis password in REDIS_URL reaches Redis, but never the output, logs, metadata or files of a run."""

from __future__ import annotations

import subprocess
import uuid

import dagster as dg
from dagster._serdes import serialize_value
import pytest
import redis

from featurestack.platform_run import print_summary, run_platform
from core.settings import load_settings
from pipelines.generator import generate
from core.redis_server import free_port
from support import platform_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_run_with_a_redis_password_leaks_it_nowhere(tmp_path, capsys, spark):
    secret = "pw-" + uuid.uuid4().hex
    port = free_port()
    subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--daemonize", "yes", "--save", "",
                    "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", secret], check=True)
    url = f"redis://:{secret}@127.0.0.1:{port}/0"
    state = tmp_path / "state"
    try:
        with platform_environment(state, "fs_secret", url):
            settings = load_settings()
            generate(settings.landing_dir, settings.start_date, 2, 300, seed=3)
            outcome = run_platform(settings)
            print_summary(outcome)
            assert redis.Redis.from_url(url).dbsize() > 0  # the password did reach Redis

            output = capsys.readouterr()
            assert ":***@" in output.out and secret not in output.out + output.err
            instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
            for run in instance.get_runs():
                assert secret not in str(run.tags)
                # Dagster keeps resource values in each run's job snapshot: the URL must not be one of them.
                assert secret not in serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
                for entry in instance.all_logs(run.run_id):
                    assert secret not in str(entry), entry
        leaking = [path for path in state.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]
        assert leaking == []
    finally:
        redis.Redis.from_url(url).shutdown(nosave=True)
