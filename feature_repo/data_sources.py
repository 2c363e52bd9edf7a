"""Batch sources: one date-partitioned parquet folder per feature table in the offline store.

The same folders are read by both offline profiles; only the source type differs, because Feast's
DuckDB store reads FileSource and its Spark store reads SparkSource.
"""

from feast import FileSource, PushSource
from feast.data_format import ParquetFormat
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

from featurestack.settings import load_settings


def offline_table_source(table: str):
    settings = load_settings()
    path = str(settings.offline_dir / table)
    description = f"Daily partitions written by pipelines/{table}.py"
    if settings.offline_profile == "spark":
        return SparkSource(
            name=f"{table}_source", path=path, file_format="parquet",
            timestamp_field="event_timestamp", description=description,
        )
    # The explicit ParquetFormat is required for a directory path (else: 'NoneType' has no 'mutate').
    return FileSource(
        name=f"{table}_source", path=path, file_format=ParquetFormat(),
        timestamp_field="event_timestamp", description=description,
    )


user_velocity_source = offline_table_source("user_velocity")
merchant_risk_source = offline_table_source("merchant_risk")

# Streamed rows enter the view through this push source (FeatureStore.push, feast serve's /push).
user_velocity_push_source = PushSource(name="user_velocity_push", batch_source=user_velocity_source)
