"""Batch sources: one date-partitioned parquet folder per feature table in the offline store.

A source says WHICH offline table a view reads (`offline_table_source`), not where the lake is: that is
deployment configuration. Its path here is the lake of a fresh clone (`.state/data/offline/<table>` of
this checkout), which plain `feast apply` registers; the platform binds every such source to its own
settings' lake and offline profile when it parses the repo (core/feast_repo.py `load_repo_contents`), so
nothing here reads the environment. Both offline profiles read the same folders: only the source type
differs (FileSource for Feast's DuckDB store, SparkSource for its Spark store).
"""

from feast import FileSource
from feast.data_format import ParquetFormat

from core.feast_repo import OFFLINE_TABLE_TAG
from core.settings import DEFAULT_DATA_DIR, offline_store_dir


def offline_table_source(table: str) -> FileSource:
    # The explicit ParquetFormat is required for a directory path (else: 'NoneType' has no 'mutate').
    return FileSource(
        name=f"{table}_source", path=str(offline_store_dir(DEFAULT_DATA_DIR) / table), file_format=ParquetFormat(),
        timestamp_field="event_timestamp", description=f"Daily partitions of the offline table {table}",
        tags={OFFLINE_TABLE_TAG: table},
    )
