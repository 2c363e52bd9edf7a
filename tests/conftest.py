from __future__ import annotations

import os
import uuid
from dataclasses import replace

import pytest
from pipelines.spark import build_spark_session

from core.artifacts import promote
from core.settings import load_settings
from serving_support import publish_online_data, write_model
from support import PLATFORM_DAYS, PLATFORM_TRANSACTIONS_PER_DAY, delete_project_keys, platform_environment


TIERS = ("unit", "integration")


def pytest_collection_modifyitems(config, items):
    """Every test belongs to a tier (`make test-fast` runs the unit tier): a module without
    `pytestmark = pytest.mark.unit` or `pytest.mark.integration` fails the collection."""
    untiered = sorted({item.nodeid.split("::")[0] for item in items if not any(item.get_closest_marker(tier) for tier in TIERS)})
    if untiered:
        raise pytest.UsageError(f"tests without a tier marker ({' or '.join(TIERS)}): {', '.join(untiered)}")


@pytest.fixture(scope="session")
def spark():
    session = build_spark_session(master="local[2]", driver_memory="2g", shuffle_partitions=2, app_name="featurestack-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """The Redis the platform would pick (REDIS_URL, 127.0.0.1:6379, or one started for the session)."""
    from core.redis_server import ensure_redis

    return ensure_redis(os.environ.get("REDIS_URL", ""), tmp_path_factory.mktemp("redis-state")).url


@pytest.fixture(scope="session")
def platform(tmp_path_factory, redis_url, spark):
    """The whole platform run once for the session on 3 generated days, under its own Feast project."""
    from featurestack.platform_run import run_platform
    from core.settings import load_settings
    from pipelines.generator import generate

    project = f"fs_e2e_{uuid.uuid4().hex[:8]}"
    with platform_environment(tmp_path_factory.mktemp("platform"), project, redis_url):
        try:
            settings = load_settings()
            generate(settings.landing_dir, settings.start_date, PLATFORM_DAYS, PLATFORM_TRANSACTIONS_PER_DAY, seed=11)
            yield run_platform(settings)
        finally:
            delete_project_keys(redis_url, project)


@pytest.fixture(scope="session")
def trained_model(platform):
    """The fraud model trained on the session platform's data (a few epochs: enough to beat chance)."""
    from training.train import train

    return train(platform.settings, platform.redis.url, epochs=4)


@pytest.fixture(scope="module")
def serving_settings(tmp_path_factory, redis_url):
    project = f"fs_serving_{uuid.uuid4().hex[:10]}"
    state = tmp_path_factory.mktemp("serving_state")
    promote(state / "models", write_model(state / "models" / "fraud_detection_v1" / "test-v1", project))
    publish_online_data(redis_url, project)
    settings = load_settings()
    yield replace(settings, state_dir=state, redis_url=redis_url, feast_project=project,
                  serving=replace(settings.serving, model_dir="", max_request_rows=50, max_wait_ms=1.0))
    delete_project_keys(redis_url, project)
