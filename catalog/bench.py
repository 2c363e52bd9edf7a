"""Benchmark: catalog statistics (DuckDB) over a generated user_velocity-shaped offline table.

    python -m catalog.bench --rows 10000000          # 10 daily partitions, 9 features

Generates the table in a temporary folder (or --dir), then times `compute_table_stats` (all
statistics and histograms of every feature), best and median of --repeat runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from catalog.stats import compute_table_stats
from core.lake import PARTITION_FILES_GLOB, partition_dir

INT_FEATURES = {"txn_count_1h": 1.2, "txn_count_24h": 4.0, "txn_count_7d": 20.0, "distinct_merchants_24h": 3.0}
FLOAT_FEATURES = ["amount_sum_1h", "amount_sum_24h", "amount_sum_7d", "amount_mean_7d", "seconds_since_prev_txn"]


def generate(table_dir: Path, rows: int, days: int = 10, seed: int = 1) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    start = datetime(2026, 11, 1)
    for day in range(days):
        n = rows // days + (1 if day < rows % days else 0)
        moment = start + timedelta(days=day)
        stamps = np.datetime64(moment, "us") + rng.integers(0, 86_400_000_000, n).astype("timedelta64[us]")
        amount = rng.lognormal(3.5, 1.2, n)
        columns = {
            "user_id": rng.integers(0, 1_000_000, n),
            "event_timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            **{name: rng.poisson(lam, n) + 1 for name, lam in INT_FEATURES.items()},
            "amount_sum_1h": amount * 1.3, "amount_sum_24h": amount * 4, "amount_sum_7d": amount * 20,
            "amount_mean_7d": rng.lognormal(3.5, 0.5, n),
            "seconds_since_prev_txn": pa.array(np.where(rng.random(n) < 0.1, np.nan, rng.exponential(20_000, n)), from_pandas=True),
        }
        path = partition_dir(table_dir, moment.date())
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path / "part-00000.parquet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to generate the table (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="catalog-bench-") as scratch:
        table_dir = (args.dir or Path(scratch)) / "user_velocity"
        if not any(table_dir.glob(PARTITION_FILES_GLOB)):
            started = time.perf_counter()
            generate(table_dir, args.rows)
            print(f"generated {args.rows:,} rows in {time.perf_counter() - started:.1f} s under {table_dir}")
        features = [*INT_FEATURES, *FLOAT_FEATURES]
        timings = []
        for _ in range(args.repeat):
            stats = compute_table_stats(table_dir, features)
            timings.append(stats.seconds)
        print(f"catalog statistics of {stats.rows:,} rows x {len(features)} features (null rate, min, max, mean, std, "
              f"7 quantiles, distinct, 20-bin histogram), {os.cpu_count()} CPUs: "
              f"best {min(timings):.2f} s, median {statistics.median(timings):.2f} s (target <= 10 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
