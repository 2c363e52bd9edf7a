"""The benchmark data set: feature tables in the offline-store layout, an entity frame, transactions.

Seeded and shaped like the platform's own tables (the schemas of feature_repo/'s user_velocity and
merchant_risk views), with the awkward parts a correct implementation must get right:
- nulls in features;
- duplicate (user, event timestamp) rows told apart only by `created_timestamp` (Feast's tie-break),
  written in random order so that file order cannot stand in for it;
- entity rows for unknown entities and entity rows later than a view's TTL after its last value.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.lake import partition_dir

TS = pa.timestamp("us", tz="UTC")
START = date(2026, 10, 1)
DAYS = 14
MICROS_PER_DAY = 86_400_000_000
USER_INT_FEATURES = ("txn_count_1h", "txn_count_24h", "txn_count_7d", "distinct_merchants_24h")
USER_FLOAT_FEATURES = ("amount_sum_1h", "amount_sum_24h", "amount_sum_7d", "amount_mean_7d", "seconds_since_prev_txn")
MERCHANT_INT_FEATURES = ("txn_count_1d", "txn_count_30d", "chargeback_count_30d")
MERCHANT_FLOAT_FEATURES = ("amount_sum_30d", "chargeback_rate_30d", "merchant_age_days")
DUPLICATE_SHARE = 0.01


@dataclass(frozen=True)
class BenchData:
    root: str
    feature_rows: int
    entities: int
    merchants: int
    entity_rows: int
    transactions: int
    start: str  # first feature timestamp (inclusive)
    end: str  # last feature timestamp (inclusive)

    @property
    def offline_dir(self) -> Path:
        return Path(self.root) / "offline"

    @property
    def entity_df_path(self) -> Path:
        return Path(self.root) / "entity_df.parquet"

    @property
    def landing_dir(self) -> Path:
        return Path(self.root) / "landing"


def _epoch_us(day: date) -> int:
    return (day - date(1970, 1, 1)).days * MICROS_PER_DAY


def _ts(micros: np.ndarray) -> pa.Array:
    return pa.array(micros.astype("datetime64[us]"), type=TS)


def _write_partitioned(table: pa.Table, table_dir: Path, day_us: np.ndarray, sort_keys: list[tuple[str, str]]) -> None:
    start_us = _epoch_us(START)
    day_index = (day_us - start_us) // MICROS_PER_DAY
    for offset in range(DAYS):
        rows = np.flatnonzero(day_index == offset)
        part = table.take(pa.array(rows)).sort_by(sort_keys)
        folder = partition_dir(table_dir, START + timedelta(days=offset))
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, folder / "part-00000.parquet", row_group_size=256_000)


def _user_velocity(rng: np.random.Generator, rows: int, entities: int) -> tuple[pa.Table, np.ndarray]:
    start_us = _epoch_us(START)
    unique_rows = rows - int(rows * DUPLICATE_SHARE)
    user = rng.integers(1, entities + 1, unique_rows)
    user[:entities] = np.arange(1, min(entities, unique_rows) + 1)  # every entity has a row
    event = start_us + rng.integers(0, DAYS * MICROS_PER_DAY, unique_rows)
    # Duplicates: same user and event timestamp, a different created timestamp and values.
    duplicated = rng.choice(unique_rows, rows - unique_rows, replace=False)
    user = np.concatenate([user, user[duplicated]])
    event = np.concatenate([event, event[duplicated]])
    created = event + rng.integers(1, 3_600_000_000, rows)
    # Exact (user, event) pairs drawn twice by chance would tie on created too: make created unique.
    created += np.arange(rows)
    columns: dict[str, pa.Array] = {
        "user_id": pa.array(user, pa.int64()),
        "event_timestamp": _ts(event),
        "created_timestamp": _ts(created),
    }
    for name in USER_INT_FEATURES:
        columns[name] = pa.array(rng.integers(0, 500, rows), pa.int64())
    for name in USER_FLOAT_FEATURES:
        values = np.round(rng.lognormal(3.0, 1.2, rows), 2)
        mask = rng.random(rows) < (0.05 if name == "seconds_since_prev_txn" else 0.002)
        columns[name] = pa.array(values, pa.float64(), mask=mask)
    order = rng.permutation(rows)  # duplicates land anywhere, before or after their twin
    table = pa.table(columns).take(pa.array(order))
    return table, event[order]


def _merchant_risk(rng: np.random.Generator, merchants: int) -> tuple[pa.Table, np.ndarray]:
    start_us = _epoch_us(START)
    merchant = np.tile(np.arange(1, merchants + 1), DAYS)
    day = np.repeat(np.arange(DAYS), merchants)
    keep = rng.random(len(merchant)) < 0.9  # not every merchant trades every day
    merchant, day = merchant[keep], day[keep]
    event = start_us + (day + 1) * MICROS_PER_DAY - 1  # end-of-day snapshots
    n = len(merchant)
    columns: dict[str, pa.Array] = {"merchant_id": pa.array(merchant, pa.int64()), "event_timestamp": _ts(event)}
    for name in MERCHANT_INT_FEATURES:
        columns[name] = pa.array(rng.integers(0, 5000, n), pa.int64())
    for name in MERCHANT_FLOAT_FEATURES:
        columns[name] = pa.array(np.round(rng.random(n) * 100, 4), pa.float64(), mask=rng.random(n) < 0.002)
    return pa.table(columns), event


def _entity_df(rng: np.random.Generator, rows: int, entities: int, merchants: int) -> pa.Table:
    start_us = _epoch_us(START)
    # 2% unknown users; timestamps from a day before the data to 9 days after (past the 7-day TTL).
    user = rng.integers(1, int(entities * 1.02) + 2, rows)
    merchant = rng.integers(1, merchants + 1, rows)
    event = start_us + rng.integers(-MICROS_PER_DAY, (DAYS + 9) * MICROS_PER_DAY, rows)
    # Unique rows: Feast identifies an entity row by its values.
    event += np.arange(rows) % 1000
    return pa.table({"user_id": pa.array(user, pa.int64()), "merchant_id": pa.array(merchant, pa.int64()), "event_timestamp": _ts(event)})


def prepare(root: Path, feature_rows: int, entity_rows: int, transactions: int, seed: int = 7) -> BenchData:
    """Write the data set under `root` (reused when a previous run wrote the same one)."""
    root = Path(root)
    entities = max(10, feature_rows // 10)
    merchants = max(10, entities // 50)
    data = BenchData(
        root=str(root), feature_rows=feature_rows, entities=entities, merchants=merchants,
        entity_rows=entity_rows, transactions=transactions,
        start=datetime.combine(START, datetime.min.time(), timezone.utc).isoformat(),
        end=(datetime.combine(START + timedelta(days=DAYS), datetime.min.time(), timezone.utc) - timedelta(microseconds=1)).isoformat(),
    )
    marker = root / "manifest.json"
    if marker.exists() and json.loads(marker.read_text()) == {**asdict(data), "seed": seed}:
        return data
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    users, user_day = _user_velocity(rng, feature_rows, entities)
    _write_partitioned(users, data.offline_dir / "user_velocity", user_day, [("user_id", "ascending"), ("event_timestamp", "ascending")])
    merchant_table, merchant_day = _merchant_risk(rng, merchants)
    _write_partitioned(merchant_table, data.offline_dir / "merchant_risk", merchant_day, [("merchant_id", "ascending")])
    pq.write_table(_entity_df(rng, entity_rows, entities, merchants), data.entity_df_path)
    if transactions:
        from pipelines.generator import generate

        days = 8
        generate(data.landing_dir, START, days, max(1, transactions // days), seed=seed)
    marker.write_text(json.dumps({**asdict(data), "seed": seed}))
    return data
