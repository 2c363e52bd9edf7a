"""Opening the Feast repo in feature_repo/ with featurestack's settings.

`import feast` costs seconds, so this module imports it only inside functions; nothing on a hot
start-up path (CLI parsing, serving) should import it at module level.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from core.redis_server import feast_connection_string
from core.settings import FEATURE_REPO_DIR, Settings

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_contents import RepoContents

# The tag of a feature view saying how old its newest value may be, online and offline.
SLA_TAG = "freshness_sla_hours"


def sla_hours(view_name: str, tags: Mapping[str, str]) -> float:
    """The view's freshness SLA in hours, from its tags; a clear error when missing or not a positive number."""
    raw = tags.get(SLA_TAG)
    if raw is None:
        raise ValueError(f"feature view {view_name} lacks the tag {SLA_TAG!r} (feature_repo/feature_views.py)")
    try:
        hours = float(raw)
    except ValueError:
        hours = float("nan")
    if not hours > 0:
        raise ValueError(f"feature view {view_name}: tag {SLA_TAG}={raw!r} is not a positive number of hours")
    return hours


# The modules of feature_repo/, imported by Feast under their bare names (as `feast apply` does).
_REPO_MODULES = tuple(path.stem for path in FEATURE_REPO_DIR.glob("*.py"))


def export_feast_environment(settings: Settings, redis_url: str | None = None) -> None:
    """Fill the ${...} placeholders of feature_repo/feature_store*.yaml (and the settings the repo's
    modules read) from `settings`, so Feast sees the same configuration as featurestack."""
    settings.registry_path.parent.mkdir(parents=True, exist_ok=True)
    if redis_url is not None:
        os.environ["FEATURESTACK_FEAST_REDIS"] = feast_connection_string(redis_url, settings.redis_type)
    os.environ.update(
        FEATURESTACK_FEAST_PROJECT=settings.feast_project,
        FEATURESTACK_FEAST_REDIS_TYPE=settings.redis_type,
        FEATURESTACK_FEAST_REGISTRY=str(settings.registry_path),
        FEATURESTACK_STATE_DIR=str(settings.state_dir),
        FEATURESTACK_OFFLINE_PROFILE=settings.offline_profile,
        FEATURESTACK_DATA_DIR=str(settings.data_dir),
        SPARK_MASTER=settings.spark_master,
        SPARK_DRIVER_MEMORY=settings.spark_driver_memory,
        SPARK_SHUFFLE_PARTITIONS=str(settings.spark_shuffle_partitions),
    )
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


@contextlib.contextmanager
def _inside_feature_repo() -> Iterator[None]:
    # Feast names repo modules by their path relative to the working directory.
    previous_cwd = os.getcwd()
    sys.path.insert(0, str(FEATURE_REPO_DIR))
    os.chdir(FEATURE_REPO_DIR)
    try:
        yield
    finally:
        os.chdir(previous_cwd)
        sys.path.remove(str(FEATURE_REPO_DIR))


def load_repo_contents(settings: Settings) -> RepoContents:
    """Parse feature_repo/ exactly as `feast apply` does (fresh: sources depend on the profile)."""
    from feast.repo_operations import parse_repo

    export_feast_environment(settings)
    for module in _REPO_MODULES:
        sys.modules.pop(module, None)
    with _inside_feature_repo():
        return parse_repo(FEATURE_REPO_DIR)


def open_store(settings: Settings, redis_url: str) -> FeatureStore:
    from feast import FeatureStore

    export_feast_environment(settings, redis_url)
    return FeatureStore(repo_path=str(FEATURE_REPO_DIR), fs_yaml_file=settings.feature_store_yaml)


def apply_repo(settings: Settings, redis_url: str) -> RepoContents:
    """Register every object of feature_repo/ (and delete registered ones no longer defined)."""
    from feast.repo_operations import apply_total_with_repo_instance

    contents = load_repo_contents(settings)
    store = open_store(settings, redis_url)
    with _inside_feature_repo():
        apply_total_with_repo_instance(
            store, settings.feast_project, store.registry, contents, skip_source_validation=True
        )
    return contents
