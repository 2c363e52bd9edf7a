"""Dagster resources: Spark (dagster-pyspark) and the platform (paths, Redis, Feast), from settings."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import dagster as dg
import redis
from dagster_pyspark import LazyPySparkResource
from pydantic import PrivateAttr

from core.feast_repo import open_store
from core.redis_server import RedisEndpoint, ensure_redis, redis_client
from core.settings import Settings, StreamSettings
from pipelines.spark import spark_conf

if TYPE_CHECKING:
    from feast import FeatureStore


def _unless_secret(url: str, variable: str) -> str | dg.EnvVar:
    """`url` itself, or where it holds a password the environment variable it came from."""
    return dg.EnvVar(variable) if urlparse(url).password else url


class PlatformResource(dg.ConfigurableResource):
    """Where the lake lives, which Redis and which Feast project: Dagster config set at the edge (the code
    location, `featurestack run`) from the settings read there; nothing here reads the environment.

    Dagster keeps a resource's values in every run's job snapshot, so a value holding a password (the
    Redis URL, the SQL registry URL) is never one of them: it is a dg.EnvVar naming the variable the
    settings came from (Dagster reads it where the code runs); without a password it is the value itself,
    or empty (Redis: the local discovery)."""

    state_dir: str
    data_dir: str
    feast_project: str
    offline_profile: str
    start_date: str  # YYYY-MM-DD, or empty: the first landed day
    redis_type: str
    redis_write_mode: str
    spark_master: str
    spark_driver_memory: str
    spark_shuffle_partitions: int
    spark_conf: dict[str, str]
    feature_repo_dir: str
    redis_url: str = ""  # the URL, dg.EnvVar("REDIS_URL") when it holds a password, or empty: the local discovery
    registry_db_url: str = ""  # the URL, dg.EnvVar("FEATURESTACK_REGISTRY_DB_URL") when it holds a password, or empty: the file registry
    mlflow_tracking_uri: str = ""  # the URI, dg.EnvVar("MLFLOW_TRACKING_URI") when it holds a password, or empty: the sqlite store under state_dir
    stream_log: str = "redis"
    stream_partitions: int = 4

    _settings: Settings | None = PrivateAttr(default=None)
    _endpoint: RedisEndpoint | None = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: Settings) -> PlatformResource:
        return cls(
            state_dir=str(settings.state_dir), data_dir=str(settings.data_dir), feast_project=settings.feast_project,
            offline_profile=settings.offline_profile, start_date=settings.start_date.isoformat() if settings.start_date else "",
            redis_url=_unless_secret(settings.redis_url, "REDIS_URL"),
            redis_type=settings.redis_type, redis_write_mode=settings.redis_write_mode,
            registry_db_url=_unless_secret(settings.registry_db_url, "FEATURESTACK_REGISTRY_DB_URL"),
            feature_repo_dir=str(settings.feature_repo_dir),
            mlflow_tracking_uri=_unless_secret(settings.mlflow_tracking_uri, "MLFLOW_TRACKING_URI"),
            spark_master=settings.spark_master, spark_driver_memory=settings.spark_driver_memory,
            spark_shuffle_partitions=settings.spark_shuffle_partitions, spark_conf=dict(settings.spark_conf),
            stream_log=settings.stream.log, stream_partitions=settings.stream.partitions,
        )

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings(
                state_dir=Path(self.state_dir), data_dir=Path(self.data_dir), redis_url=self.redis_url,
                feast_project=self.feast_project, offline_profile=self.offline_profile,
                spark_master=self.spark_master, spark_driver_memory=self.spark_driver_memory,
                spark_shuffle_partitions=self.spark_shuffle_partitions, spark_conf=dict(self.spark_conf),
                start_date=date.fromisoformat(self.start_date) if self.start_date else None, registry_db_url=self.registry_db_url,
                redis_type=self.redis_type, redis_write_mode=self.redis_write_mode,
                mlflow_tracking_uri=self.mlflow_tracking_uri,
                stream=StreamSettings(log=self.stream_log, partitions=self.stream_partitions),
                feature_repo_dir=Path(self.feature_repo_dir),
            )
        return self._settings

    @property
    def redis_endpoint(self) -> RedisEndpoint:
        if self._endpoint is None:
            self._endpoint = ensure_redis(self.redis_url, Path(self.state_dir))
        return self._endpoint

    def redis_client(self) -> "redis.Redis | redis.cluster.RedisCluster":
        return redis_client(self.redis_endpoint.url, self.redis_type, socket_timeout=10, socket_connect_timeout=5)

    def feature_store(self) -> FeatureStore:
        return open_store(self.settings, self.redis_endpoint.url)


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "platform": PlatformResource.from_settings(settings),
        "pyspark": LazyPySparkResource(
            spark_config=spark_conf(
                master=settings.spark_master,
                driver_memory=settings.spark_driver_memory,
                shuffle_partitions=settings.spark_shuffle_partitions,
                extra_conf=settings.spark_conf,
            )
        ),
    }
