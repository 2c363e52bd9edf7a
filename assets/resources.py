"""Dagster resources: Spark (dagster-pyspark) and the platform (paths, Redis, Feast), from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
import redis
from dagster_pyspark import LazyPySparkResource
from pydantic import PrivateAttr

from core.feast_repo import open_store
from core.redis_server import RedisEndpoint, ensure_redis, redis_client
from core.settings import Settings, load_settings
from pipelines.spark import spark_conf

if TYPE_CHECKING:
    from feast import FeatureStore


class PlatformResource(dg.ConfigurableResource):
    """Where the lake lives, which Redis and which Feast project: all read from featurestack settings."""

    _settings: Settings | None = PrivateAttr(default=None)
    _endpoint: RedisEndpoint | None = PrivateAttr(default=None)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def redis_endpoint(self) -> RedisEndpoint:
        if self._endpoint is None:
            self._endpoint = ensure_redis(self.settings.redis_url, self.settings.state_dir)
        return self._endpoint

    def redis_client(self) -> "redis.Redis | redis.cluster.RedisCluster":
        return redis_client(self.redis_endpoint.url, self.settings.redis_type, socket_timeout=10, socket_connect_timeout=5)

    def feature_store(self) -> FeatureStore:
        return open_store(self.settings, self.redis_endpoint.url)


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "platform": PlatformResource(),
        "pyspark": LazyPySparkResource(
            spark_config=spark_conf(
                master=settings.spark_master,
                driver_memory=settings.spark_driver_memory,
                shuffle_partitions=settings.spark_shuffle_partitions,
                extra_conf=settings.spark_conf,
            )
        ),
    }
