"""Validation time of a 1M-row partition: `python -m validations.bench [--rows N]`.

Generates one day of N landing transactions with the seeded generator and validates it with the
`transactions` suite; then an N-row partition shaped like `user_velocity` (built from the same
transactions with pandas, since Spark would dominate the time). Prints seconds per suite.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.lake import partition_dir
from validations.runner import SuiteParams, read_table, validate

DAY = date(2026, 11, 2)


def _user_velocity_like(transactions: pd.DataFrame) -> pd.DataFrame:
    """A user_velocity-shaped partition with the same row count, from the day's transactions (the
    windows are approximated per day; the point is the validation cost, not the feature values)."""
    frame = transactions.sort_values(["user_id", "event_timestamp"]).drop_duplicates(["user_id", "event_timestamp"])
    grouped = frame.groupby("user_id", sort=False)
    count = grouped.cumcount().to_numpy() + 1
    amount_sum = grouped["amount"].cumsum().to_numpy()
    previous = grouped["event_timestamp"].shift()
    return pd.DataFrame({
        "user_id": frame["user_id"].to_numpy(),
        "event_timestamp": frame["event_timestamp"].to_numpy(),
        "txn_count_1h": np.minimum(count, 2), "txn_count_24h": count, "txn_count_7d": count + 3,
        "amount_sum_1h": frame["amount"].to_numpy(), "amount_sum_24h": amount_sum, "amount_sum_7d": amount_sum + 10.0,
        "amount_mean_7d": (amount_sum + 10.0) / (count + 3),
        "distinct_merchants_24h": np.minimum(count, 2),
        "seconds_since_prev_txn": (frame["event_timestamp"] - previous).dt.total_seconds().to_numpy(),
    })


def main() -> None:
    from pipelines.generator import generate

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp) / "landing"
        generate(landing, DAY, 1, args.rows, seed=5)
        partition = partition_dir(landing / "transactions", DAY)
        validate("transactions", read_table(partition).head(1000), SuiteParams(DAY, 1000))  # warm: imports, GX context
        started = time.perf_counter()
        transactions = read_table(partition)
        read_seconds = time.perf_counter() - started
        result = validate("transactions", transactions, SuiteParams(DAY, len(transactions)))
        _report(result, read_seconds, time.perf_counter() - started)
        features_dir = Path(tmp) / "user_velocity"
        features_dir.mkdir()
        pq.write_table(pa.Table.from_pandas(_user_velocity_like(pq.read_table(partition).to_pandas()), preserve_index=False), features_dir / "part-00000.parquet")
        started = time.perf_counter()
        features = read_table(features_dir)
        read_seconds = time.perf_counter() - started
        result = validate("user_velocity", features, SuiteParams(DAY, len(features)))
        _report(result, read_seconds, time.perf_counter() - started)


def _report(result, read_seconds: float, total_seconds: float) -> None:
    print(f"{result.suite:<14} {result.rows:>9,} rows  {len(result.outcomes):>2} expectations  "
          f"read {read_seconds:4.2f} s + validate {result.seconds:4.2f} s = {total_seconds:4.2f} s  success={result.success}")
    if not result.success:
        print(result.summary())


if __name__ == "__main__":
    main()
