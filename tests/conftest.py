from __future__ import annotations

import os

import pytest
import redis

from pipelines.spark import build_spark_session


@pytest.fixture(scope="session")
def spark():
    session = build_spark_session(master="local[2]", driver_memory="2g", shuffle_partitions=2, app_name="featurestack-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """The Redis the platform would pick (REDIS_URL, 127.0.0.1:6379, or one started for the session)."""
    from featurestack.redis_server import ensure_redis

    return ensure_redis(os.environ.get("REDIS_URL", ""), tmp_path_factory.mktemp("redis-state")).url


def delete_project_keys(url: str, project: str) -> None:
    """Remove only the keys of a test's own Feast project (key = entity key bytes + project)."""
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=b"*" + project.encode(), count=10_000))
    if keys:
        client.delete(*keys)
    client.close()
