"""The two sides of every benchmark, each run in its own worker process (bench/worker.py).

A side's timed methods return {"seconds": ..., "digest": ...}: the digest is a hash of the output in a
canonical form (sorted rows, normalized types, NaN == null), so the orchestrator can check both sides
produced the same thing before it reports a speed.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis

from bench.data import BenchData

SERVICE = "fraud_detection_v1"
PUBLISH_VIEW = "user_velocity"
CREATED_COLUMNS = {"user_velocity": "created_timestamp"}  # bench sources with a created timestamp


# --------------------------------------------------------------------------------------------------
# canonical digests


def _normalize(column: pa.ChunkedArray) -> pa.ChunkedArray:
    t = column.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            column = column.cast(pa.timestamp(t.unit, tz="UTC"))
        return column.cast(pa.timestamp("us", tz="UTC"), safe=False)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        # Numbers compare as float64: Feast's Spark store returns int features as float64 (pandas NaN for
        # null); every int here is far below 2**53, so the cast is exact.
        column = column.cast(pa.float64())
        return pc.if_else(pc.is_nan(column), pa.scalar(None, pa.float64()), column)
    return column


def table_digest(table: pa.Table, sort_keys: list[str] | None = None) -> str:
    """sha256 of a table's rows in a canonical form: columns by name, rows sorted by all columns."""
    names = sorted(table.column_names)
    table = pa.table({name: _normalize(table.column(name)) for name in names})
    keys = sort_keys or names
    table = table.sort_by([(k, "ascending") for k in keys] + [(k, "ascending") for k in names if k not in keys])
    digest = hashlib.sha256(repr((names, table.num_rows)).encode())
    for name in names:
        column = table.column(name).combine_chunks()
        digest.update(name.encode())
        digest.update(np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=np.uint8).tobytes())
        filled = column.fill_null(pa.scalar(0, column.type))
        digest.update(filled.to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


def matrix_digest(values: np.ndarray) -> str:
    values = np.where(np.isnan(values), np.nan, values)  # one NaN bit pattern
    return hashlib.sha256(repr(values.shape).encode() + values.astype("<f8").tobytes()).hexdigest()


def _timed(fn) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


# --------------------------------------------------------------------------------------------------
# the Feast repo of the benchmark: feature_repo/'s definitions over the benchmark's parquet


def bench_definitions(data: BenchData, source_kind: str):
    """Entities, views and services of feature_repo/ (names, schemas, TTLs, tags, services), their sources
    pointed at the benchmark data; user_velocity's source gains a created timestamp column. A view fed by a
    PushSource in feature_repo/ keeps it (same name) over the benchmark's batch source."""
    from feast import FeatureService, FeatureView, Field, FileSource, PushSource
    from feast.data_format import ParquetFormat
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.types import from_value_type

    from core.feast_repo import load_repo_contents
    from core.settings import load_settings

    contents = load_repo_contents(load_settings())
    entities = {entity.name: entity for entity in contents.entities}
    views = {}
    for fv in contents.feature_views:
        path = str(data.offline_dir / fv.name)
        created = CREATED_COLUMNS.get(fv.name)
        if source_kind == "spark":
            source = SparkSource(name=f"{fv.name}_source", path=path, file_format="parquet",
                                 timestamp_field="event_timestamp", created_timestamp_column=created)
        else:
            source = FileSource(name=f"{fv.name}_source", path=path, file_format=ParquetFormat(),
                                timestamp_field="event_timestamp", created_timestamp_column=created)
        if isinstance(fv.stream_source, PushSource):
            source = PushSource(name=fv.stream_source.name, batch_source=source)
        view_entities = [entities[name] for name in fv.entities]
        key_fields = [Field(name=e.join_key, dtype=from_value_type(e.value_type)) for e in view_entities]
        views[fv.name] = FeatureView(
            name=fv.name, entities=view_entities, ttl=fv.ttl, source=source, online=fv.online, owner=fv.owner,
            description=fv.description, tags=fv.tags, schema=[*key_fields, *fv.features],
        )
    services = [
        FeatureService(name=s.name, features=[views[p.name] for p in s.feature_view_projections],
                       owner=s.owner, description=s.description, tags=s.tags)
        for s in contents.feature_services
    ]
    return list(entities.values()), list(views.values()), services


def open_bench_store(config: dict, offline_store: dict, project: str, registry: str, batch_engine: dict | None = None):
    from feast import FeatureStore, RepoConfig

    from core.redis_server import feast_connection_string

    repo_config = RepoConfig(
        project=project,
        registry=registry,
        provider="local",
        online_store={"type": "redis", "connection_string": feast_connection_string(config["redis_url"])},
        offline_store=offline_store,
        batch_engine=batch_engine or {"type": "local"},
        entity_key_serialization_version=3,
        repo_path=config["state_dir"],
    )
    return FeatureStore(config=repo_config)


def spark_project(config: dict) -> str:
    """The Feast project of the Spark-profile benchmarks (its own registry: SparkSources)."""
    return config["project"] + "_spark"


def open_spark_bench_store(config: dict):
    """The benchmark repo with Feast's Spark offline store and Spark materialization engine."""
    conf = spark_conf(config)
    return open_bench_store(config, {"type": "spark", "spark_conf": conf}, spark_project(config),
                            config["registry"].replace(".db", "_spark.db"), {"type": "spark.engine", "spark_conf": conf})


def spark_conf(config: dict) -> dict[str, str]:
    from pipelines.spark import BASE_CONF

    return {**BASE_CONF, "spark.master": "local[*]", "spark.driver.memory": config["spark_driver_memory"],
            "spark.sql.shuffle.partitions": str(config["spark_shuffle_partitions"])}


def delete_project_keys(client: redis.Redis, project: str) -> int:
    suffix = project.encode()
    keys = [k for k in client.scan_iter(match=b"*" + suffix, count=10_000) if k.endswith(suffix)]
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start : start + 5000])
    return len(keys)


def redis_digest(client: redis.Redis, project: str) -> dict:
    """sha256 of every key of a project with its fields (HGETALL), the key's project suffix stripped so
    that two projects holding the same rows have the same digest."""
    suffix = project.encode()
    keys = sorted(k for k in client.scan_iter(match=b"*" + suffix, count=10_000) if k.endswith(suffix))
    digest = hashlib.sha256()
    for start in range(0, len(keys), 5000):
        pipe = client.pipeline(transaction=False)
        batch = keys[start : start + 5000]
        for key in batch:
            pipe.hgetall(key)
        for key, fields in zip(batch, pipe.execute()):
            digest.update(repr((key[: -len(suffix)], sorted(fields.items()))).encode())
    return {"keys": len(keys), "digest": digest.hexdigest()}


def sample_entities(data: BenchData, rows: int, seed: int = 3) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    return {
        "user_id": rng.integers(1, data.entities + 1, rows).tolist(),
        "merchant_id": rng.integers(1, data.merchants + 1, rows).tolist(),
    }


def feast_online_matrix(store, features, entities: dict[str, list[int]], names: list[str]) -> np.ndarray:
    rows = [dict(zip(entities, values)) for values in zip(*entities.values())]
    result = store.get_online_features(features=features, entity_rows=rows).to_dict()
    return np.array([[np.nan if v is None else float(v) for v in result[name]] for name in names], dtype=np.float64).T


def publish_check(store, client: redis.Redis, data: BenchData, project: str) -> dict:
    """What a publish left: the Redis bytes of the project, what Feast reads back, registered intervals."""
    view = store.get_feature_view(PUBLISH_VIEW)
    names = [f.name for f in view.features]
    entities = {"user_id": sample_entities(data, 1000)["user_id"]}
    matrix = feast_online_matrix(store, [f"{PUBLISH_VIEW}:{n}" for n in names], entities, names)
    return {**redis_digest(client, project), "feast_read_digest": matrix_digest(matrix),
            "intervals": len(view.materialization_intervals)}


# --------------------------------------------------------------------------------------------------
# Feast's side


class FeastSide:
    def __init__(self, config: dict):
        self.config = config
        self.data = BenchData(**config["data"])
        self.client = redis.Redis.from_url(config["redis_url"])
        self.store = open_bench_store(config, {"type": "duckdb"}, config["project"], config["registry"])
        self.spark_store = None

    # publish ---------------------------------------------------------------------------------------
    def publish(self) -> dict:
        start, end = datetime.fromisoformat(self.data.start), datetime.fromisoformat(self.data.end)
        seconds, _ = _timed(lambda: self.store.materialize(start, end + timedelta(microseconds=1), feature_views=[PUBLISH_VIEW]))
        return {"seconds": seconds}

    def publish_check(self) -> dict:
        return publish_check(self.store, self.client, self.data, self.config["project"])

    def reset_redis(self) -> dict:
        return {"deleted": delete_project_keys(self.client, self.config["project"])}

    # online read -----------------------------------------------------------------------------------
    def online_setup(self) -> dict:
        self.service = self.store.get_feature_service(SERVICE)
        self.names = [f.name for p in self.service.feature_view_projections for f in p.features]
        self.entities = sample_entities(self.data, self.config["online_rows"])
        return {"features": len(self.names)}

    def online(self, calls: int) -> dict:
        latencies, matrix = [], None
        for _ in range(calls):
            seconds, matrix = _timed(lambda: feast_online_matrix(self.store, self.service, self.entities, self.names))
            latencies.append(seconds)
        return {"latencies": latencies, "digest": matrix_digest(matrix)}

    # point-in-time join ----------------------------------------------------------------------------
    def _entity_df(self):
        return pq.read_table(self.data.entity_df_path).to_pandas()

    def pit(self) -> dict:
        entity_df = self._entity_df()
        service = self.store.get_feature_service(SERVICE)
        seconds, table = _timed(lambda: self.store.get_historical_features(entity_df=entity_df, features=service).to_arrow())
        return {"seconds": seconds, "digest": table_digest(table, ["user_id", "merchant_id", "event_timestamp"]), "rows": table.num_rows}

    def spark_setup(self) -> dict:
        """Register the Spark-profile repo (once) and start its Spark session outside the timed runs."""
        if self.spark_store is not None:
            return {}
        entities, views, services = bench_definitions(self.data, "spark")
        self.spark_store = open_spark_bench_store(self.config)
        self.spark_store.apply([*entities, *views, *services])
        # Warm the materialization engine too (its Python workers): materialize the first hour.
        start = datetime.fromisoformat(self.data.start)
        self.spark_store.materialize(start, start + timedelta(hours=1), feature_views=[PUBLISH_VIEW])
        # Start the Spark session (JVM) outside the timed runs: a first tiny retrieval.
        warm = self._entity_df().head(10)
        self.spark_store.get_historical_features(entity_df=warm, features=self.spark_store.get_feature_service(SERVICE)).to_arrow()
        return {}

    def publish_spark(self) -> dict:
        start, end = datetime.fromisoformat(self.data.start), datetime.fromisoformat(self.data.end)
        seconds, _ = _timed(lambda: self.spark_store.materialize(start, end + timedelta(microseconds=1), feature_views=[PUBLISH_VIEW]))
        return {"seconds": seconds}

    def publish_check_spark(self) -> dict:
        return publish_check(self.spark_store, self.client, self.data, spark_project(self.config))

    def reset_redis_spark(self) -> dict:
        return {"deleted": delete_project_keys(self.client, spark_project(self.config))}

    def pit_spark(self) -> dict:
        entity_df = self._entity_df()
        service = self.spark_store.get_feature_service(SERVICE)
        seconds, table = _timed(lambda: self.spark_store.get_historical_features(entity_df=entity_df, features=service).to_arrow())
        keep = [c for c in table.column_names if c != "date"]
        return {"seconds": seconds, "digest": table_digest(table.select(keep), ["user_id", "merchant_id", "event_timestamp"]), "rows": table.num_rows}


# --------------------------------------------------------------------------------------------------
# our side


class OurSide:
    def __init__(self, config: dict):
        self.config = config
        self.data = BenchData(**config["data"])
        self.client = redis.Redis.from_url(config["redis_url"])
        self.store = None

    def apply(self) -> dict:
        """Register the benchmark repo (DuckDB profile) once; both sides open the same registry."""
        from featurestack.duckdb_offline_store import TYPE

        import onlinestore.resp_bulk  # noqa: F401  (load the compiled writer now, as Feast's side imported feast)

        entities, views, services = bench_definitions(self.data, "file")
        self.store = open_bench_store(self.config, {"type": TYPE}, self.config["project"], self.config["registry"])
        self.store.apply([*entities, *views, *services])
        return {"views": [v.name for v in views]}

    def _layouts(self) -> dict:
        from onlinestore.redis_layout import layout_from_feature_view

        entity_types = {e.join_key: e.value_type for e in self.store.list_entities()}
        return {v.name: layout_from_feature_view(v, entity_types) for v in self.store.list_feature_views()}

    # publish ---------------------------------------------------------------------------------------
    def publish(self, view: str = PUBLISH_VIEW) -> dict:
        from onlinestore.online_writer import publish_latest, read_offline_latest

        registered = self.store.get_feature_view(view)
        layout = self._layouts()[view]
        join_keys = [name for name, _ in layout.join_keys]

        def run():
            latest = read_offline_latest(self.data.offline_dir / view, join_keys,
                                         created_column=registered.batch_source.created_timestamp_column or None)
            result = publish_latest(self.client, self.config["project"], layout, latest)
            start, end = datetime.fromisoformat(self.data.start), datetime.fromisoformat(self.data.end)
            self.store.registry.apply_materialization(registered, self.config["project"], start, end + timedelta(microseconds=1))
            return result

        seconds, result = _timed(run)
        return {"seconds": seconds, "written": result.written}

    publish_check = FeastSide.publish_check
    reset_redis = FeastSide.reset_redis

    # publish through Spark ------------------------------------------------------------------------
    def spark_setup(self) -> dict:
        """Open the Spark-profile repo (the Feast side registered it) and start a Spark session with the
        same configuration as Feast's, outside the timed runs."""
        from pipelines.spark import build_spark_session

        self.spark_store = open_spark_bench_store(self.config)
        conf = spark_conf(self.config)
        self.spark = build_spark_session(master=conf["spark.master"], driver_memory=conf["spark.driver.memory"],
                                         shuffle_partitions=int(conf["spark.sql.shuffle.partitions"]), app_name="featurestack-bench")
        # Warm the Python workers (they import the writer) with a small publish; the timed runs start
        # from an empty project.
        self._publish_spark(limit=1000)
        return {}

    def publish_spark(self) -> dict:
        seconds, result = _timed(self._publish_spark)
        return {"seconds": seconds, "written": result.written}

    def _publish_spark(self, limit: int | None = None):
        from onlinestore.redis_layout import layout_from_feature_view
        from onlinestore.spark_publish import publish_latest_spark, read_offline_latest_spark

        registered = self.spark_store.get_feature_view(PUBLISH_VIEW)
        entity_types = {e.join_key: e.value_type for e in self.spark_store.list_entities()}
        layout = layout_from_feature_view(registered, entity_types)

        latest = read_offline_latest_spark(self.spark, self.data.offline_dir / PUBLISH_VIEW, [k for k, _ in layout.join_keys],
                                           created_column=registered.batch_source.created_timestamp_column or None)
        if limit:
            latest = latest.limit(limit).repartition(2)
        result = publish_latest_spark(latest, self.config["redis_url"], "redis", spark_project(self.config), layout)
        if not limit:
            start, end = datetime.fromisoformat(self.data.start), datetime.fromisoformat(self.data.end)
            self.spark_store.registry.apply_materialization(registered, spark_project(self.config), start, end + timedelta(microseconds=1))
        return result

    def publish_check_spark(self) -> dict:
        return publish_check(self.spark_store, self.client, self.data, spark_project(self.config))

    reset_redis_spark = FeastSide.reset_redis_spark

    # online read -----------------------------------------------------------------------------------
    def online_setup(self) -> dict:
        from onlinestore.online_reader import OnlineFeatureReader

        self.publish("merchant_risk")
        service = self.store.get_feature_service(SERVICE)
        refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
        self.reader = OnlineFeatureReader(self.client, self.config["project"], list(self._layouts().values()), refs)
        self.entities = sample_entities(self.data, self.config["online_rows"])
        return {"features": len(refs)}

    def online(self, calls: int) -> dict:
        latencies, result = [], None
        for _ in range(calls):
            seconds, result = _timed(lambda: self.reader.read(self.entities))
            latencies.append(seconds)
        return {"latencies": latencies, "digest": matrix_digest(result.values)}

    # point-in-time join ----------------------------------------------------------------------------
    pit_entity_df = FeastSide._entity_df

    def pit(self) -> dict:
        entity_df = self.pit_entity_df()
        service = self.store.get_feature_service(SERVICE)
        seconds, table = _timed(lambda: self.store.get_historical_features(entity_df=entity_df, features=service).to_arrow())
        return {"seconds": seconds, "digest": table_digest(table, ["user_id", "merchant_id", "event_timestamp"]), "rows": table.num_rows}

    def raw_asof(self) -> dict:
        """Reference: a bare DuckDB ASOF JOIN of the same entity rows and files (no TTL, no tie-break)."""
        import duckdb

        offline = self.data.offline_dir

        def run():
            connection = duckdb.connect()
            try:
                connection.register("entity_df", pq.read_table(self.data.entity_df_path))
                return connection.sql(f"""
                    SELECT e.*, u.* EXCLUDE (user_id, event_timestamp, created_timestamp), m.* EXCLUDE (merchant_id, event_timestamp)
                    FROM entity_df e
                    ASOF LEFT JOIN read_parquet('{offline}/user_velocity/*/*.parquet', hive_partitioning = false) u
                      ON e.user_id = u.user_id AND e.event_timestamp >= u.event_timestamp
                    ASOF LEFT JOIN read_parquet('{offline}/merchant_risk/*/*.parquet', hive_partitioning = false) m
                      ON e.merchant_id = m.merchant_id AND e.event_timestamp >= m.event_timestamp
                """).to_arrow_table()
            finally:
                connection.close()

        seconds, table = _timed(run)
        return {"seconds": seconds, "rows": table.num_rows}

    # serving ---------------------------------------------------------------------------------------
    def serving_model(self, model_dir: str) -> dict:
        """A model artifact over the benchmark project for `featurestack serve` (bench/serving_bench.py)."""
        from bench.serving_bench import write_model

        return write_model(self, model_dir)


SIDES = {"feast": FeastSide, "ours": OurSide}


def load_side(name: str):
    """The class of a worker's side; the pipeline and stream sides' modules are imported only by their workers."""
    if name in SIDES:
        return SIDES[name]
    if name in ("spark_pipelines", "duckdb_pipelines"):
        from bench import pipelines_bench

        return {"spark_pipelines": pipelines_bench.SparkPipelines, "duckdb_pipelines": pipelines_bench.DuckDBPipelines}[name]
    from bench import stream_bench

    return stream_bench.SIDES[name]
