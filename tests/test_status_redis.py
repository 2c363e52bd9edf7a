"""`featurestack status` says which Redis it reads and whether it is the one the last run used."""

from __future__ import annotations

import pytest

import subprocess

import redis

from featurestack.cli import main
from core.redis_server import free_port, redact_url
from support import platform_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_status_reads_the_redis_of_the_last_run(platform, capsys):
    # The command reads its settings from the environment (the edge): the platform's.
    with platform_environment(platform.settings.state_dir, platform.settings.feast_project, platform.redis.url):
        assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"reading {redact_url(platform.redis.url)}" in out
    assert "the Redis the last run used" in out and "NOT" not in out


def test_status_says_when_it_reads_another_redis(platform, tmp_path, capsys):
    port = free_port()
    subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--daemonize", "yes", "--save", "",
                    "--appendonly", "no", "--dir", str(tmp_path)], check=True)
    other = f"redis://127.0.0.1:{port}/0"
    try:
        with platform_environment(platform.settings.state_dir, platform.settings.feast_project, other):
            assert main(["status"]) == 0
        out = capsys.readouterr().out
        assert f"reading {other} (REDIS_URL)" in out
        assert "NOT the Redis the last run used" in out and redact_url(platform.redis.url) in out
        assert f"0 entity keys of project {platform.settings.feast_project}" in out
    finally:
        redis.Redis.from_url(other).shutdown(nosave=True)
