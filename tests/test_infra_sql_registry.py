"""The multi-user profile: Feast's SQL registry on the real Postgres of this machine (127.0.0.1:5432),
in a database of its own that is dropped afterwards."""

from __future__ import annotations

import os
import uuid

import pytest

from core.feast_repo import apply_repo, open_store
from core.settings import FEATURE_REPO_DIR
from support import platform_settings

pytestmark = pytest.mark.integration

psycopg = pytest.importorskip("psycopg")
POSTGRES_ADMIN_URL = os.environ.get("FEATURESTACK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def registry_db():
    name = f"fs_registry_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        pytest.skip(f"no Postgres at {POSTGRES_ADMIN_URL}: {error}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def sql_settings(registry_db, tmp_path, redis_url):
    return platform_settings(tmp_path, f"fs_sqlreg_{uuid.uuid4().hex[:8]}", redis_url, registry_db_url=registry_db)


def test_sql_registry_profile_is_selected(sql_settings):
    assert sql_settings.feature_store_yaml == FEATURE_REPO_DIR / "feature_store.sql-registry.yaml"


def test_sql_registry_on_postgres_is_shared_between_users(sql_settings, registry_db, redis_url):
    contents = apply_repo(sql_settings, redis_url)
    applied = sorted(view.name for view in contents.feature_views)
    assert applied

    # A second user (another process in real life): a fresh store on the same database sees everything.
    other = open_store(sql_settings, redis_url)
    assert type(other.registry).__name__ == "SqlRegistry"
    other.refresh_registry()
    assert sorted(view.name for view in other.list_feature_views()) == applied
    assert {service.name for service in other.list_feature_services()} == {s.name for s in contents.feature_services}

    # The objects are rows in Postgres, under this project.
    with psycopg.connect(registry_db.replace("postgresql+psycopg://", "postgresql://")) as connection:
        rows = connection.execute("SELECT count(*) FROM feature_views WHERE project_id = %s", (sql_settings.feast_project,)).fetchone()[0]
    assert rows == len(applied)
