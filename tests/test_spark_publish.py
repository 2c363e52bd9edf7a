"""Publishing through Spark (mapInArrow on the executors) leaves exactly what the local publish leaves,
and picks the same newest row per entity as the DuckDB reader, tie-breaks included."""

from __future__ import annotations

from dataclasses import replace

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from core.redis_server import project_keys
from onlinestore.online_writer import publish_latest, read_offline_latest
from onlinestore.redis_layout import ViewLayout
from onlinestore.spark_publish import publish_latest_spark, read_offline_latest_spark
from support import delete_project_keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAYOUT = ViewLayout("spark_view", (("user_id", "int64"),), (("txn_count", "int64"), ("amount", "double")))
START = datetime(2026, 11, 1, tzinfo=timezone.utc)
TS = pa.timestamp("us", tz="UTC")


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """Three daily partitions of 4,000 rows over 1,500 users with nulls, exact timestamp ties told apart
    by a created timestamp (in an order that file order cannot stand in for), and a second file."""
    root = tmp_path_factory.mktemp("spark_publish")
    rng = np.random.default_rng(11)
    for day in range(3):
        users = rng.integers(1, 1501, 4000)
        stamps = START + timedelta(days=day) + np.array([timedelta(seconds=int(s)) for s in rng.integers(0, 40, 4000)])
        created = START + timedelta(days=day) + np.array([timedelta(seconds=int(s)) for s in rng.permutation(4000)])
        counts = [None if i % 17 == 0 else int(v) for i, v in enumerate(rng.integers(-5, 10**12, 4000))]
        table = pa.table({"user_id": pa.array(users, pa.int64()), "event_timestamp": pa.array(list(stamps), TS),
                          "created": pa.array(list(created), TS), "txn_count": pa.array(counts, pa.int64()),
                          "amount": pa.array(rng.normal(50, 20, 4000))})
        folder = root / f"date=2026-11-0{day + 1}"
        folder.mkdir()
        pq.write_table(table.slice(0, 3000), folder / "part-0.parquet")
        pq.write_table(table.slice(3000), folder / "part-1.parquet")
    return root


@pytest.mark.parametrize("created_column", [None, "created"])
def test_spark_latest_equals_the_duckdb_latest(spark, offline, created_column):
    expected = read_offline_latest(offline, ["user_id"], created_column=created_column).sort_by("user_id")
    actual = read_offline_latest_spark(spark, offline, ["user_id"], created_column=created_column).toArrow()
    actual = actual.select(expected.column_names).sort_by("user_id")
    assert actual.num_rows == 1500
    assert actual.cast(expected.schema).equals(expected)
    two_days = read_offline_latest_spark(spark, offline, ["user_id"], dates=["2026-11-01", "2026-11-02"]).toArrow()
    assert two_days.column("event_timestamp").to_numpy().max() < np.datetime64("2026-11-03")


def test_spark_publish_writes_what_the_local_publish_writes(spark, offline, redis_url):
    through_spark, local = f"fs_test_{uuid.uuid4().hex[:12]}", f"fs_test_{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(redis_url)
    try:
        latest = read_offline_latest_spark(spark, offline, ["user_id"], created_column="created").repartition(3)
        result = publish_latest_spark(latest, redis_url, "redis", through_spark, LAYOUT)
        assert (result.entities, result.written) == (1500, 1500)
        publish_latest(client, local, LAYOUT, read_offline_latest(offline, ["user_id"], created_column="created"))
        ours = {key[: -len(through_spark)]: client.hgetall(key) for key in project_keys(client, through_spark)}
        reference = {key[: -len(local)]: client.hgetall(key) for key in project_keys(client, local)}
        assert len(ours) == 1500 and ours == reference
        # Feast's monotonic rule holds per executor too: publishing the same rows again writes nothing.
        again = publish_latest_spark(latest, redis_url, "redis", through_spark, LAYOUT)
        assert (again.written, again.skipped_not_newer) == (0, 1500)
    finally:
        client.close()
        delete_project_keys(redis_url, through_spark)
        delete_project_keys(redis_url, local)


def test_the_spark_profile_publishes_what_the_local_profile_published(platform, redis_url):
    """The online assets under FEATURESTACK_OFFLINE_PROFILE=spark (Spark finds the latest rows and its
    executors write) replay the session platform's days into another Redis database: the result equals
    what the local profile left, key for key."""
    import dagster as dg

    from assets.definitions import build_definitions
    from core.feast_repo import apply_repo

    settings = platform.settings
    other_database = redis_url.rsplit("/", 1)[0] + "/11"
    spark_settings = replace(settings, redis_url=other_database, offline_profile="spark")
    try:
        apply_repo(spark_settings, other_database)
        job = build_definitions(spark_settings).resolve_job_def("daily_features")
        online = [dg.AssetKey(["online", "user_velocity"]), dg.AssetKey(["online", "merchant_risk"])]
        for day in platform.days:
            result = job.execute_in_process(partition_key=day.isoformat(), asset_selection=online)
            assert result.success
        local, on_spark = redis.Redis.from_url(redis_url), redis.Redis.from_url(other_database)
        local_keys, spark_keys = set(project_keys(local, settings.feast_project)), set(project_keys(on_spark, settings.feast_project))
        assert len(spark_keys) > 100 and spark_keys == local_keys
        assert all(local.hgetall(key) == on_spark.hgetall(key) for key in sorted(spark_keys))
        local.close()
        on_spark.close()
    finally:
        delete_project_keys(other_database, settings.feast_project)
