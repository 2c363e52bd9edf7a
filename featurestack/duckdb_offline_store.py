"""A Feast offline store whose point-in-time join is one DuckDB ASOF JOIN per feature view.

Feast's own DuckDB store (ibis) joins every entity row with every older feature row of its entity and
deduplicates with a window afterwards; this store asks DuckDB for exactly the answer instead:

    entity rows  LEFT ASOF JOIN  feature rows  ON join keys AND entity_ts >= feature_ts

then applies the view's TTL (a match older than entity_ts - ttl is no match) and, where the source has
a created timestamp column, breaks event-timestamp ties by the newest created timestamp beforehand:
the same rows, values and nulls as Feast's DuckDB and Spark stores (bench/ checks that on every run).

Use it with the Feast SDK unchanged, by class path, in feature_store.yaml:

    offline_store:
      type: featurestack.duckdb_offline_store.FeaturestackDuckDBOfflineStore

Everything this store does not handle itself (SQL entity queries, on-demand views, field mappings,
the created-timestamp cutoff, non-parquet sources) goes to Feast's DuckDB store, as does everything
other than get_historical_features.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any, List, Optional, Union

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.saved_dataset import SavedDatasetStorage
from pydantic import StrictStr

TYPE = "featurestack.duckdb_offline_store.FeaturestackDuckDBOfflineStore"
_ROW = "__featurestack_entity_row"


class FeaturestackDuckDBOfflineStoreConfig(FeastConfigBaseModel):
    type: StrictStr = TYPE
    # Passed on to Feast's DuckDB store for the calls it handles.
    staging_location: Optional[str] = None
    staging_location_endpoint_override: Optional[str] = None
    # DuckDB threads for the join (default: DuckDB's, i.e. every core).
    threads: Optional[int] = None


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _parquet_glob(source: DataSource, repo_path: str | None) -> str | None:
    """The parquet files of a FileSource: a file, or every *.parquet below a directory."""
    if not isinstance(source, FileSource) or source.field_mapping or source.s3_endpoint_override:
        return None
    path = source.path
    if "://" in path:
        return None
    resolved = Path(path) if Path(path).is_absolute() or not repo_path else Path(repo_path) / path
    if resolved.is_dir():
        return str(resolved / "**" / "*.parquet")
    return str(resolved) if resolved.suffix == ".parquet" else None


class AsofRetrievalJob(RetrievalJob):
    """The training set as one DuckDB query, run when the caller asks for the data."""

    def __init__(self, sql: str, entity: pa.Table, full_feature_names: bool, metadata: RetrievalMetadata, threads: int | None):
        super().__init__()
        self._sql = sql
        self._entity = entity
        self._full_feature_names = full_feature_names
        self._metadata = metadata
        self._threads = threads

    def _to_arrow_internal(self, timeout: Optional[int] = None) -> pa.Table:
        connection = duckdb.connect()
        try:
            if self._threads:
                connection.execute(f"SET threads = {int(self._threads)}")
            connection.execute("SET TimeZone = 'UTC'")
            connection.register("__featurestack_entity_df", self._entity)
            return connection.sql(self._sql).to_arrow_table()
        finally:
            connection.close()

    def _to_df_internal(self, timeout: Optional[int] = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> List[OnDemandFeatureView]:
        return []

    @property
    def metadata(self) -> Optional[RetrievalMetadata]:
        return self._metadata

    def persist(self, storage: SavedDatasetStorage, allow_overwrite: bool = False, timeout: Optional[int] = None):
        destination = storage.to_data_source()
        if not isinstance(destination, FileSource):
            raise NotImplementedError(f"{type(self).__name__} persists to a FileSource only, not {type(destination).__name__}")
        if os.path.exists(destination.path) and not allow_overwrite:
            raise FileExistsError(f"{destination.path} exists (pass allow_overwrite=True to replace it)")
        pq.write_table(self.to_arrow(), destination.path)


def _entity_arrow(entity_df: pd.DataFrame, timestamp_column: str) -> pa.Table:
    table = pa.Table.from_pandas(entity_df, preserve_index=False)
    column = table.column(timestamp_column)
    if not pa.types.is_timestamp(column.type):
        raise ValueError(f"entity_df column {timestamp_column!r} must be a timestamp, not {column.type}")
    # Naive entity timestamps are UTC (as in Feast); compare at microsecond precision, like the parquet.
    target = pa.timestamp("us", tz="UTC")
    if column.type.tz is None:
        column = column.cast(pa.timestamp(column.type.unit)).cast(pa.timestamp(column.type.unit, tz="UTC"))
    table = table.set_column(table.column_names.index(timestamp_column), timestamp_column, column.cast(target, safe=False))
    return table.append_column(_ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))


def build_asof_sql(
    entity_columns: list[str],
    timestamp_column: str,
    views: list[dict[str, Any]],
) -> str:
    """SQL of the training set. Each view: name, glob, join_keys (feature column -> entity column),
    timestamp_field, created_timestamp_column (or None), ttl (timedelta or None), features [(column, alias)]."""
    ts = _quoted(timestamp_column)
    ctes = ["__entities AS (SELECT * FROM __featurestack_entity_df)"]  # with its row number column {_ROW}
    joins, selected = [], [f"__entities.{_quoted(c)}" for c in entity_columns]
    for index, view in enumerate(views):
        alias = f"__fv{index}"
        keys = list(view["join_keys"])
        feature_columns = [column for column, _ in view["features"]]
        key_list = ", ".join(_quoted(k) for k in keys)
        event = _quoted(view["timestamp_field"])
        source = f"read_parquet('{view['glob']}', hive_partitioning = false, union_by_name = true)"
        ttl: timedelta | None = view["ttl"]
        in_ttl = ""
        if ttl:
            micros = ttl // timedelta(microseconds=1)
            in_ttl = f" AND {{alias}}.__ts >= __entities.{ts} - INTERVAL {micros} MICROSECOND"
        entity_keys = ", ".join(f"__entities.{_quoted(e)}" for e in view["join_keys"].values())
        on_keys = [f"__entities.{_quoted(e)} = {{alias}}.{_quoted(f)}" for f, e in view["join_keys"].items()]
        asof_on = " AND ".join(on_keys + [f"__entities.{ts} >= {{alias}}.__ts"]).format(alias="__s")
        columns = ", ".join(_quoted(c) for c in feature_columns)
        if view["created_timestamp_column"]:
            # The ASOF join finds each entity row's matching event timestamp on the slim (keys, ts) columns;
            # the rows at that timestamp are then fetched by an equi-join, and among them the newest
            # created timestamp wins, as in Feast. Deduplicating all feature rows first would cost a
            # sort (or hash aggregate) of the whole table; this touches only the matches.
            created = _quoted(view["created_timestamp_column"])
            ctes.append(
                f"{alias}_match AS (SELECT __entities.{_ROW}, {entity_keys}, __s.__ts FROM __entities "
                f"ASOF JOIN (SELECT {key_list}, {event}::TIMESTAMPTZ AS __ts FROM {source}) __s ON {asof_on} "
                f"WHERE true{in_ttl.format(alias='__s')})"
            )
            fetch_on = " AND ".join(
                [f"__m.{_quoted(e)} = __f.{_quoted(f)}" for f, e in view["join_keys"].items()] + ["__m.__ts = __f.__ts"]
            )
            ctes.append(
                f"{alias} AS (SELECT __m.{_ROW}, __f.__ts, {', '.join(f'__f.{_quoted(c)}' for c in feature_columns)} "
                f"FROM {alias}_match __m JOIN (SELECT {key_list}, {event}::TIMESTAMPTZ AS __ts, {created} AS __created, "
                f"{columns} FROM {source}) __f ON {fetch_on} "
                f"QUALIFY row_number() OVER (PARTITION BY __m.{_ROW} ORDER BY __f.__created DESC) = 1)"
            )
            joins.append(f"LEFT JOIN {alias} ON __entities.{_ROW} = {alias}.{_ROW}")
            for column, output in view["features"]:
                selected.append(f"{alias}.{_quoted(column)} AS {_quoted(output)}")
            continue
        ctes.append(f"{alias} AS (SELECT {key_list}, {event}::TIMESTAMPTZ AS __ts, {columns} FROM {source})")
        on = " AND ".join(on_keys + [f"__entities.{ts} >= {{alias}}.__ts"]).format(alias=alias)
        joins.append(f"ASOF LEFT JOIN {alias} ON {on}")
        for column, output in view["features"]:
            value = f"{alias}.{_quoted(column)}"
            if ttl:
                value = f"CASE WHEN true{in_ttl.format(alias=alias)} THEN {value} END"
            selected.append(f"{value} AS {_quoted(output)}")
    return (
        "WITH " + ",\n".join(ctes) + "\nSELECT " + ", ".join(selected)
        + "\nFROM __entities " + "\n".join(joins) + f"\nORDER BY __entities.{_ROW}"
    )


class FeaturestackDuckDBOfflineStore(DuckDBOfflineStore):
    supports_filter_by_created_timestamp = True

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: List[FeatureView],
        feature_refs: List[str],
        entity_df: Union[pd.DataFrame, str],
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        plan = _plan(config, feature_views, feature_refs, entity_df, registry, project, full_feature_names, filter_by_created_timestamp)
        if plan is None:
            return DuckDBOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project, full_feature_names, filter_by_created_timestamp
            )
        return plan


def _plan(config, feature_views, feature_refs, entity_df, registry, project, full_feature_names, filter_by_created_timestamp):
    from feast.infra.offline_stores import offline_utils

    if not isinstance(entity_df, pd.DataFrame) or filter_by_created_timestamp:
        return None
    if OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry):
        return None
    entity_schema = dict(zip(entity_df.columns, entity_df.dtypes))
    timestamp_column = offline_utils.infer_event_timestamp_from_entity_df(entity_schema)
    views = []
    for view in feature_views:
        glob = _parquet_glob(view.batch_source, str(config.repo_path) if config.repo_path else None)
        if glob is None:
            return None
        prefix = view.projection.name_to_use()
        names = [ref.split(":", 1)[1] for ref in feature_refs if ref.startswith(f"{prefix}:")]
        base = view.projection.name_alias or view.name
        join_key_map = view.projection.join_key_map or {e.name: e.name for e in view.entity_columns}
        views.append({
            "glob": glob,
            "join_keys": dict(join_key_map),
            "timestamp_field": view.batch_source.timestamp_field,
            "created_timestamp_column": view.batch_source.created_timestamp_column or None,
            "ttl": view.ttl if view.ttl and view.ttl > timedelta(0) else None,
            "features": [(name, f"{base}__{name}" if full_feature_names else name) for name in names],
        })
    entity = _entity_arrow(entity_df, timestamp_column)
    sql = build_asof_sql(list(entity_df.columns), timestamp_column, views)
    timestamps = entity.column(timestamp_column)
    import pyarrow.compute as pc

    bounds = pc.min_max(timestamps)
    metadata = RetrievalMetadata(
        features=feature_refs,
        keys=[c for c in entity_df.columns if c != timestamp_column],
        min_event_timestamp=bounds["min"].as_py(),
        max_event_timestamp=bounds["max"].as_py(),
    )
    return AsofRetrievalJob(sql, entity, full_feature_names, metadata, config.offline_store.threads)
