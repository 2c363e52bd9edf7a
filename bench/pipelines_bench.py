"""Target 4: the Spark feature pipelines (user_velocity's windowed pipeline derived from its declaration,
pipelines/windowed.py; merchant_risk's module in feature_repo/feature_views/) against the same
logic written as DuckDB SQL for this benchmark only, over the same landing transactions, for the last
generated day (which reads every generated day: 7 days back for velocity, 30 for merchant risk).

Both sides read the parquet and write parquet; the orchestrator compares the outputs (integers and
timestamps exactly, float sums to 1e-9 relative: the two engines add in different orders)."""

from __future__ import annotations

import shutil
import time
from datetime import date, datetime, time as dtime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.data import BenchData
from core.lake import partition_dates, partition_dir

VIEWS = {"user_velocity": ["user_id", "event_timestamp"], "merchant_risk": ["merchant_id"]}


def _days(data: BenchData) -> list[date]:
    landing = data.landing_dir / "transactions"
    return partition_dates(landing)


class SparkPipelines:
    def __init__(self, config: dict):
        from pipelines.spark import build_spark_session

        self.data = BenchData(**config["data"])
        self.out = Path(config["state_dir"]) / "pipelines" / "spark"
        self.spark = build_spark_session(
            master="local[*]", driver_memory=config["spark_driver_memory"],
            shuffle_partitions=config["spark_shuffle_partitions"], app_name="featurestack-bench",
        )

    def run(self) -> dict:
        from core.feast_repo import view_module
        from core.settings import FEATURE_REPO_DIR

        from core.windows import WindowedView
        from pipelines.windowed import build_windowed_features

        build_merchant_risk = view_module(FEATURE_REPO_DIR, "merchant_risk").build_merchant_risk
        velocity = WindowedView.from_feature_view(view_module(FEATURE_REPO_DIR, "user_velocity").user_velocity, "user_id")

        days = _days(self.data)
        day = days[-1]
        landing = self.data.landing_dir
        shutil.rmtree(self.out, ignore_errors=True)
        started = time.perf_counter()
        # Partition pruning by path: only the days each pipeline needs.
        velocity_days = [str(partition_dir(landing / "transactions", d)) for d in days if d >= day - timedelta(days=7)]
        risk_days = [d for d in days if d >= day - timedelta(days=30)]
        transactions = self.spark.read.parquet(*velocity_days)
        build_windowed_features(transactions, velocity, day).write.mode("overwrite").parquet(str(self.out / "user_velocity"))
        risk_tx = self.spark.read.parquet(*(str(partition_dir(landing / "transactions", d)) for d in risk_days))
        chargebacks = self.spark.read.parquet(*(str(partition_dir(landing / "chargebacks", d)) for d in risk_days))
        merchants = self.spark.read.parquet(str(landing / "merchants"))
        build_merchant_risk(risk_tx, chargebacks, merchants, day).write.mode("overwrite").parquet(str(self.out / "merchant_risk"))
        return {"seconds": time.perf_counter() - started, "out": str(self.out)}


USER_VELOCITY_SQL = """
WITH tx AS (
    SELECT user_id, merchant_id, amount, event_timestamp FROM read_parquet($tx, hive_partitioning = false)
), per_instant AS (
    SELECT user_id, event_timestamp, epoch_us(event_timestamp) AS us,
           count(*) AS c, sum(amount) AS a, list(DISTINCT merchant_id) AS m
    FROM tx GROUP BY user_id, event_timestamp
), features AS (
    SELECT user_id, event_timestamp,
        sum(c) OVER w1h AS txn_count_1h, sum(c) OVER w24h AS txn_count_24h, sum(c) OVER w7d AS txn_count_7d,
        sum(a) OVER w1h AS amount_sum_1h, sum(a) OVER w24h AS amount_sum_24h, sum(a) OVER w7d AS amount_sum_7d,
        list_unique(flatten(list(m) OVER w24h)) AS distinct_merchants_24h,
        -- the previous instant within the 7-day window, else null (core/windows.py)
        (us - max(us) OVER w7d_before) / 1e6 AS seconds_since_prev_txn
    FROM per_instant
    WINDOW w1h AS (PARTITION BY user_id ORDER BY us RANGE BETWEEN 3599999999 PRECEDING AND CURRENT ROW),
           w24h AS (PARTITION BY user_id ORDER BY us RANGE BETWEEN 86399999999 PRECEDING AND CURRENT ROW),
           w7d AS (PARTITION BY user_id ORDER BY us RANGE BETWEEN 604799999999 PRECEDING AND CURRENT ROW),
           w7d_before AS (PARTITION BY user_id ORDER BY us RANGE BETWEEN 604799999999 PRECEDING AND 1 PRECEDING)
)
SELECT user_id, event_timestamp,
       txn_count_1h::BIGINT AS txn_count_1h, txn_count_24h::BIGINT AS txn_count_24h, txn_count_7d::BIGINT AS txn_count_7d,
       amount_sum_1h::DOUBLE AS amount_sum_1h, amount_sum_24h::DOUBLE AS amount_sum_24h, amount_sum_7d::DOUBLE AS amount_sum_7d,
       (amount_sum_7d / txn_count_7d)::DOUBLE AS amount_mean_7d,
       distinct_merchants_24h::BIGINT AS distinct_merchants_24h, seconds_since_prev_txn::DOUBLE AS seconds_since_prev_txn
FROM features WHERE event_timestamp >= $day_start AND event_timestamp < $day_end
"""

MERCHANT_RISK_SQL = """
WITH in_window AS (
    SELECT txn_id, merchant_id, amount, event_timestamp FROM read_parquet($tx, hive_partitioning = false)
    WHERE event_timestamp > $window_start AND event_timestamp <= $snapshot
), known AS (
    SELECT DISTINCT txn_id, 1 AS charged_back FROM read_parquet($cb, hive_partitioning = false)
    WHERE reported_timestamp <= $snapshot
), per_merchant AS (
    SELECT merchant_id,
        sum(CASE WHEN event_timestamp >= $day_start THEN 1 ELSE 0 END)::BIGINT AS txn_count_1d,
        count(*)::BIGINT AS txn_count_30d, sum(amount)::DOUBLE AS amount_sum_30d,
        coalesce(sum(charged_back), 0)::BIGINT AS chargeback_count_30d
    FROM in_window LEFT JOIN known USING (txn_id) GROUP BY merchant_id
)
SELECT p.merchant_id, $snapshot::TIMESTAMPTZ AS event_timestamp, txn_count_1d, txn_count_30d, amount_sum_30d,
       chargeback_count_30d, (chargeback_count_30d / txn_count_30d)::DOUBLE AS chargeback_rate_30d,
       ((epoch_us($snapshot::TIMESTAMPTZ) - epoch_us(m.created_timestamp)) / 86400000000.0)::DOUBLE AS merchant_age_days
FROM per_merchant p LEFT JOIN read_parquet($merchants) m USING (merchant_id)
"""


class DuckDBPipelines:
    def __init__(self, config: dict):
        self.data = BenchData(**config["data"])
        self.out = Path(config["state_dir"]) / "pipelines" / "duckdb"

    def run(self) -> dict:
        import duckdb

        days = _days(self.data)
        day = days[-1]
        landing = self.data.landing_dir
        shutil.rmtree(self.out, ignore_errors=True)
        (self.out / "user_velocity").mkdir(parents=True)
        (self.out / "merchant_risk").mkdir(parents=True)
        started = time.perf_counter()
        day_start = datetime.combine(day, dtime(), tzinfo=timezone.utc)
        snapshot = day_start + timedelta(days=1) - timedelta(microseconds=1)
        velocity_tx = [str(partition_dir(landing / "transactions", d) / "*.parquet") for d in days if d >= day - timedelta(days=7)]
        risk = [d for d in days if d >= day - timedelta(days=30)]
        connection = duckdb.connect()
        try:
            connection.execute("SET TimeZone = 'UTC'")
            connection.execute(
                f"COPY ({USER_VELOCITY_SQL}) TO '{self.out / 'user_velocity' / 'part-0.parquet'}' (FORMAT parquet)",
                {"tx": velocity_tx, "day_start": day_start, "day_end": day_start + timedelta(days=1)},
            )
            connection.execute(
                f"COPY ({MERCHANT_RISK_SQL}) TO '{self.out / 'merchant_risk' / 'part-0.parquet'}' (FORMAT parquet)",
                {
                    "tx": [str(partition_dir(landing / "transactions", d) / "*.parquet") for d in risk],
                    "cb": [str(partition_dir(landing / "chargebacks", d) / "*.parquet") for d in risk],
                    "merchants": str(landing / "merchants" / "*.parquet"),
                    "window_start": snapshot - timedelta(days=30), "snapshot": snapshot, "day_start": day_start,
                },
            )
        finally:
            connection.close()
        return {"seconds": time.perf_counter() - started, "out": str(self.out)}


def _canonical(path: Path, keys: list[str]) -> pa.Table:
    from bench.sides import _normalize

    table = pq.read_table(path)
    table = pa.table({name: _normalize(table.column(name)) for name in sorted(table.column_names)})
    return table.sort_by([(k, "ascending") for k in keys])


def compare_outputs(spark_out: str, duckdb_out: str, rtol: float = 1e-9) -> dict:
    """Same rows, same columns; integers/timestamps equal, floats equal to rtol, nulls in the same places."""
    problems, rows = [], {}
    for view, keys in VIEWS.items():
        a, b = _canonical(Path(spark_out) / view, keys), _canonical(Path(duckdb_out) / view, keys)
        rows[view] = a.num_rows
        if a.column_names != b.column_names or a.num_rows != b.num_rows:
            problems.append(f"{view}: columns/rows differ: {a.column_names} x{a.num_rows} vs {b.column_names} x{b.num_rows}")
            continue
        for name in a.column_names:
            x, y = a.column(name).combine_chunks(), b.column(name).combine_chunks()
            if not np.array_equal(x.is_null().to_numpy(zero_copy_only=False), y.is_null().to_numpy(zero_copy_only=False)):
                problems.append(f"{view}.{name}: nulls differ")
            elif pa.types.is_floating(x.type):
                xv, yv = x.fill_null(0).to_numpy(), y.fill_null(0).to_numpy()
                if not np.allclose(xv, yv, rtol=rtol, atol=0):
                    problems.append(f"{view}.{name}: max relative difference {np.max(np.abs(xv - yv) / np.maximum(np.abs(xv), 1e-300)):.3g}")
            elif not x.equals(y):
                problems.append(f"{view}.{name}: values differ")
    return {"identical": not problems, "problems": problems, "rows": rows}
