from __future__ import annotations

import os
import uuid
from dataclasses import replace

import pytest
import redis

from core.redis_server import project_keys
from core.settings import load_settings
from onlinestore.redis_layout import ViewLayout
from pipelines.spark import build_spark_session
from serving_support import publish_online_data, write_model
from support import PLATFORM_DAYS, PLATFORM_TRANSACTIONS_PER_DAY, delete_project_keys, platform_settings

# Tests keep fixed dates (the demo's default days end yesterday): every settings object built in a test,
# and every process a test starts, sees this first partition unless the test says otherwise.
TEST_START_DATE = "2026-11-01"
os.environ.setdefault("FEATURESTACK_START_DATE", TEST_START_DATE)

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
def declared_views(tmp_path_factory) -> dict:
    """The feature views as declared in feature_repo/ (parsed as `feast apply` does), by name."""
    from core.feast_repo import load_repo_contents

    contents = load_repo_contents(platform_settings(tmp_path_factory.mktemp("declared"), "fs_declared", ""))
    return {view.name: view for view in contents.feature_views}


@pytest.fixture(scope="session")
def user_velocity_spec(declared_views):
    """user_velocity's windowed aggregations, read off its declaration."""
    from core.windows import WindowedView

    return WindowedView.from_feature_view(declared_views["user_velocity"], "user_id")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """The Redis the platform would pick (REDIS_URL, 127.0.0.1:6379, or one started for the session)."""
    from core.redis_server import ensure_redis

    return ensure_redis(os.environ.get("REDIS_URL", ""), tmp_path_factory.mktemp("redis-state")).url


@pytest.fixture(scope="session")
def platform(tmp_path_factory, redis_url, spark):
    """The whole platform run once for the session on 3 generated days, under its own Feast project."""
    from featurestack.platform_run import run_platform
    from pipelines.generator import generate

    project = f"fs_e2e_{uuid.uuid4().hex[:8]}"
    settings = platform_settings(tmp_path_factory.mktemp("platform"), project, redis_url)
    try:
        generate(settings.landing_dir, settings.start_date, PLATFORM_DAYS, PLATFORM_TRANSACTIONS_PER_DAY, seed=11)
        outcome = run_platform(settings)  # a failure no longer raises: it is listed in the outcome
        assert outcome.failed == [] and outcome.blocked == [], (outcome.failed, outcome.blocked)
        yield outcome
    finally:
        delete_project_keys(redis_url, project)


@pytest.fixture(scope="session")
def trained_model(platform):
    """The fraud model trained on the session platform's data (a few epochs: enough to beat chance),
    registered and put through the promotion gate as `featurestack train` does (champion if it passes)."""
    from assets.training import gate, promote_challenger
    from support import untimed_gate_policy
    from training.train import train

    result = train(platform.settings, platform.redis.url, epochs=4)
    if gate(platform.settings, result, untimed_gate_policy(result)).passed:
        promote_challenger(platform.settings, result.manifest.model, note="tests: trained_model")
    return result


@pytest.fixture(scope="module")
def serving_settings(tmp_path_factory, redis_url):
    project = f"fs_serving_{uuid.uuid4().hex[:10]}"
    state = tmp_path_factory.mktemp("serving_state")
    model_dir = state / "models" / "fraud_detection_v1" / "test-v1"
    write_model(model_dir, project)
    publish_online_data(redis_url, project)
    settings = load_settings()
    # Its own lake too: the served-feature log writes there.
    yield replace(settings, state_dir=state, data_dir=state / "data", redis_url=redis_url, feast_project=project,
                  serving=replace(settings.serving, model_dir=str(model_dir), max_request_rows=50, max_wait_ms=1.0))
    delete_project_keys(redis_url, project)


@pytest.fixture
def velocity(declared_views, user_velocity_spec):
    """user_velocity's window declaration and its Redis layout."""
    view = declared_views["user_velocity"]
    features = tuple((field.name, field.dtype.to_value_type().name.lower()) for field in view.features)
    return user_velocity_spec, ViewLayout(view.name, (("user_id", "int64"),), features, view.ttl)


@pytest.fixture
def projects(redis_url):
    """A maker of Feast projects of the test's own; their keys (online rows, event logs) go at the end."""
    made = []

    def new() -> str:
        made.append(f"fs_stream_{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield new
    client = redis.Redis.from_url(redis_url)
    for project in made:
        keys = list(project_keys(client, project)) + list(client.scan_iter(f"featurestack:{project}:*"))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
    client.close()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small catalog snapshot saved where `featurestack catalog` finds it, and the environment to find it."""
    from catalog.snapshot import catalog_dir, write_snapshot
    from catalog_support import build_small_catalog

    with pytest.MonkeyPatch.context() as monkeypatch:
        snapshot, settings = build_small_catalog(tmp_path_factory.mktemp("catalog-cli"), monkeypatch)
    path = write_snapshot(snapshot, catalog_dir(settings))
    env = {**os.environ, "FEATURESTACK_STATE_DIR": str(settings.state_dir)}
    env.pop("FEATURESTACK_DATA_DIR", None)
    return path, env
