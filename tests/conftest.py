from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from featurestack.redis_server import project_keys
from pipelines.spark import build_spark_session

# Tests keep fixed dates (the demo's default days end yesterday): every settings object built in a test,
# and every process a test starts, sees this first partition unless the test says otherwise.
TEST_START_DATE = "2026-11-01"
os.environ.setdefault("FEATURESTACK_START_DATE", TEST_START_DATE)

PLATFORM_DAYS = 3
PLATFORM_TRANSACTIONS_PER_DAY = 1500


@pytest.fixture(scope="session")
def spark():
    session = build_spark_session(master="local[2]", driver_memory="2g", shuffle_partitions=2, app_name="featurestack-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def declared_views(tmp_path_factory) -> dict:
    """The feature views as declared in feature_repo/ (parsed as `feast apply` does), by name."""
    from featurestack.feast_repo import load_repo_contents
    from featurestack.settings import load_settings

    with platform_environment(tmp_path_factory.mktemp("declared"), "fs_declared", ""):
        contents = load_repo_contents(load_settings())
    return {view.name: view for view in contents.feature_views}


@pytest.fixture(scope="session")
def user_velocity_spec(declared_views):
    """user_velocity's windowed aggregations, read off its declaration."""
    from featurestack.windows import WindowedView

    return WindowedView.from_feature_view(declared_views["user_velocity"], "user_id")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """The Redis the platform would pick (REDIS_URL, 127.0.0.1:6379, or one started for the session)."""
    from featurestack.redis_server import ensure_redis

    return ensure_redis(os.environ.get("REDIS_URL", ""), tmp_path_factory.mktemp("redis-state")).url


def delete_project_keys(url: str, project: str) -> None:
    """Remove only the keys of a test's own Feast project."""
    client = redis.Redis.from_url(url)
    keys = list(project_keys(client, project))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()


@contextlib.contextmanager
def platform_environment(state_dir, project: str, redis_url: str, **extra: str) -> Iterator[None]:
    """The environment of a platform of its own (state folder, Feast project, Redis, local profile unless
    `extra` says otherwise),
    restored exactly afterwards (the platform code exports settings into os.environ)."""
    saved_environment = dict(os.environ)
    os.environ.update({
        "FEATURESTACK_STATE_DIR": str(state_dir), "FEATURESTACK_FEAST_PROJECT": project,
        "FEATURESTACK_OFFLINE_PROFILE": "local", "REDIS_URL": redis_url, **extra,
    })
    os.environ.pop("FEATURESTACK_DATA_DIR", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_environment)


@pytest.fixture(scope="session")
def platform(tmp_path_factory, redis_url, spark):
    """The whole platform run once for the session on 3 generated days, under its own Feast project."""
    from featurestack.platform_run import run_platform
    from featurestack.settings import load_settings
    from pipelines.generator import generate

    project = f"fs_e2e_{uuid.uuid4().hex[:8]}"
    with platform_environment(tmp_path_factory.mktemp("platform"), project, redis_url):
        try:
            settings = load_settings()
            generate(settings.landing_dir, settings.start_date, PLATFORM_DAYS, PLATFORM_TRANSACTIONS_PER_DAY, seed=11)
            outcome = run_platform(settings)  # a failure no longer raises: it is listed in the outcome
            assert outcome.failed == [] and outcome.blocked == [], (outcome.failed, outcome.blocked)
            yield outcome
        finally:
            delete_project_keys(redis_url, project)


@pytest.fixture(scope="session")
def trained_model(platform):
    """The fraud model trained on the session platform's data (a few epochs: enough to beat chance)."""
    from training.train import train

    return train(platform.settings, platform.redis.url, epochs=4)
