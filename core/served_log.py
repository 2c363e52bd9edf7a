"""The served-feature log: one row per scored transaction and model variant, as serving saw it.

Serving writes it (off the request path) into the offline store, date-partitioned by the day the row
was scored; monitoring reads it (drift of served values, realized performance once labels mature,
training/serving skew). Both go through this module, so the columns are spelled once.

Columns: the fixed ones below, then one per join key of the model's views (named as the join key),
one per feature ref (`view__feature`, float64, null when the value or the entity was missing) and
one per request-time feature (`request__name`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from core.lake import partition_dir

if TYPE_CHECKING:  # serving writes the log without pandas (tens of MB, a slow import in a busy server)
    import pandas as pd

SERVED_TABLE = "served"
TIMESTAMP = pa.timestamp("us", tz="UTC")

FIXED_FIELDS = (
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("txn_id", pa.string()),  # as sent by the client (null when it sent none)
    pa.field("event_timestamp", TIMESTAMP, nullable=False),  # the transaction's instant; features are as of just before it
    pa.field("scored_at", TIMESTAMP, nullable=False),
    pa.field("model_name", pa.string(), nullable=False),
    pa.field("model_version", pa.string(), nullable=False),
    pa.field("variant", pa.string(), nullable=False),  # champion | challenger
    pa.field("answered", pa.bool_(), nullable=False),  # False: a shadow score, not returned to the client
    pa.field("score", pa.float64(), nullable=False),
)
REQUEST_PREFIX = "request__"


def feature_column(ref: str) -> str:
    """`view:feature` -> its column name (`view__feature`, as Feast's full feature names)."""
    return ref.replace(":", "__", 1)


def served_schema(join_keys: list[str] | tuple[str, ...], feature_refs: list[str] | tuple[str, ...],
                  request_features: list[str] | tuple[str, ...]) -> pa.Schema:
    return pa.schema([
        *FIXED_FIELDS,
        *(pa.field(key, pa.int64()) for key in join_keys),
        *(pa.field(feature_column(ref), pa.float64()) for ref in feature_refs),
        *(pa.field(f"{REQUEST_PREFIX}{name}", pa.float64()) for name in request_features),
    ])


def served_dir(offline_dir: Path, feature_service: str) -> Path:
    """{offline}/served/<feature service>/date=YYYY-MM-DD/*.parquet"""
    return offline_dir / SERVED_TABLE / feature_service


def served_partition(offline_dir: Path, feature_service: str, day) -> Path:
    return partition_dir(served_dir(offline_dir, feature_service), day)


def read_served_day(offline_dir: Path, feature_service: str, day) -> pd.DataFrame | None:
    """The served-feature log of one day (every file of its partition), or None when the day has none."""
    folder = served_partition(offline_dir, feature_service, day)
    files = sorted(folder.glob("*.parquet"))
    if not files:
        return None
    return pa.concat_tables([pq.read_table(file) for file in files]).to_pandas()
