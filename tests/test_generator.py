"""The card-payment generator: exact landing layout and schemas, determinism, and a real fraud signal."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import generator
from pipelines.generator import GenerationSummary, generate

pytestmark = pytest.mark.unit

START = date(2026, 11, 1)
TS = pa.timestamp("us", tz="UTC")

# Written out here, not imported: other code reads these paths and schemas, so the test pins them.
EXPECTED_SCHEMAS = {
    "users": pa.schema([("user_id", pa.int64()), ("signup_timestamp", TS), ("home_country", pa.string())]),
    "merchants": pa.schema([("merchant_id", pa.int64()), ("created_timestamp", TS), ("category", pa.string()),
                            ("country", pa.string())]),
    "transactions": pa.schema([("txn_id", pa.string()), ("user_id", pa.int64()), ("merchant_id", pa.int64()),
                               ("amount", pa.float64()), ("currency", pa.string()), ("country", pa.string()),
                               ("channel", pa.string()), ("event_timestamp", TS)]),
    "chargebacks": pa.schema([("txn_id", pa.string()), ("user_id", pa.int64()), ("merchant_id", pa.int64()),
                              ("txn_timestamp", TS), ("reported_timestamp", TS)]),
}


def _day_file(landing: Path, table: str, day: date) -> Path:
    return landing / table / f"date={day.isoformat()}" / "part-00000.parquet"


def _landing_files(landing: Path) -> dict[str, bytes]:
    return {str(path.relative_to(landing)): path.read_bytes() for path in sorted(landing.rglob("*")) if path.is_file()}


def _connect(landing: Path) -> duckdb.DuckDBPyConnection:
    """Views over the landing zone, `labelled` being transactions with their fraud label and signal columns."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"""
        CREATE VIEW transactions AS SELECT * FROM read_parquet('{landing}/transactions/*/*.parquet', hive_partitioning = false);
        CREATE VIEW chargebacks AS SELECT * FROM read_parquet('{landing}/chargebacks/*/*.parquet', hive_partitioning = false);
        CREATE VIEW users AS SELECT * FROM read_parquet('{landing}/users/users.parquet');
        CREATE VIEW merchants AS SELECT * FROM read_parquet('{landing}/merchants/merchants.parquet');
        CREATE VIEW labelled AS
        SELECT t.*, c.txn_id IS NOT NULL AS fraud,
               count(*) OVER (PARTITION BY t.user_id ORDER BY t.event_timestamp
                              RANGE BETWEEN INTERVAL 10 MINUTES PRECEDING AND CURRENT ROW) AS user_txns_last_10_minutes,
               t.amount / median(t.amount) OVER (PARTITION BY t.user_id) AS amount_to_user_median,
               t.event_timestamp - m.created_timestamp < INTERVAL 14 DAYS AS new_merchant,
               t.country <> u.home_country AS abroad
        FROM transactions t
        LEFT JOIN (SELECT txn_id FROM chargebacks) c USING (txn_id)
        JOIN merchants m USING (merchant_id)
        JOIN users u USING (user_id);
    """)
    return con


@pytest.fixture(scope="module")
def small_landing(tmp_path_factory) -> tuple[Path, GenerationSummary]:
    landing = tmp_path_factory.mktemp("landing")
    return landing, generate(landing, START, days=3, transactions_per_day=2000, seed=7)


@pytest.fixture(scope="module")
def large_landing(tmp_path_factory) -> tuple[Path, GenerationSummary]:
    landing = tmp_path_factory.mktemp("landing_large")
    return landing, generate(landing, START, days=6, transactions_per_day=20_000, seed=7)


def test_layout_schemas_and_summary(small_landing):
    landing, summary = small_landing
    days = [START + timedelta(days=offset) for offset in range(3)]
    expected_files = {landing / "users" / "users.parquet", landing / "merchants" / "merchants.parquet"}
    expected_files |= {_day_file(landing, table, day) for table in ("transactions", "chargebacks") for day in days}
    # Exactly these files: no temporary file is left behind by the atomic writes.
    assert {path for path in landing.rglob("*") if path.is_file()} == expected_files

    for path in expected_files:
        table = path.relative_to(landing).parts[0]
        assert pq.read_schema(path).remove_metadata() == EXPECTED_SCHEMAS[table], path

    assert summary.landing_dir == landing
    assert summary.days == days
    rows = {"users": pq.read_metadata(landing / "users" / "users.parquet").num_rows,
            "merchants": pq.read_metadata(landing / "merchants" / "merchants.parquet").num_rows,
            "transactions": sum(pq.read_metadata(_day_file(landing, "transactions", day)).num_rows for day in days),
            "chargebacks": sum(pq.read_metadata(_day_file(landing, "chargebacks", day)).num_rows for day in days)}
    assert summary.rows == rows
    assert rows["transactions"] == 3 * 2000
    assert summary.fraud_rate == pytest.approx(rows["chargebacks"] / rows["transactions"])


def test_same_seed_gives_identical_bytes(tmp_path):
    generate(tmp_path / "a", START, days=2, transactions_per_day=2000, seed=11)
    generate(tmp_path / "b", START, days=2, transactions_per_day=2000, seed=11)
    assert _landing_files(tmp_path / "a") == _landing_files(tmp_path / "b")


def test_a_day_does_not_depend_on_how_many_days_are_generated(tmp_path):
    generate(tmp_path / "two", START, days=2, transactions_per_day=2000, seed=11)
    generate(tmp_path / "three", START, days=3, transactions_per_day=2000, seed=11)
    two, three = _landing_files(tmp_path / "two"), _landing_files(tmp_path / "three")
    assert two == {name: content for name, content in three.items() if name in two}
    assert len(three) == len(two) + 2


def test_another_seed_gives_other_data(tmp_path):
    generate(tmp_path / "a", START, days=1, transactions_per_day=2000, seed=1)
    generate(tmp_path / "b", START, days=1, transactions_per_day=2000, seed=2)
    a, b = _landing_files(tmp_path / "a"), _landing_files(tmp_path / "b")
    assert all(a[name] != b[name] for name in a)


def test_transactions_ids_sorting_and_timestamps(small_landing):
    landing, summary = small_landing
    all_ids: list[str] = []
    for day in summary.days:
        table = pq.read_table(_day_file(landing, "transactions", day))
        rows = table.to_pylist()
        ids = [row["txn_id"] for row in rows]
        all_ids += ids
        assert all(re.fullmatch(rf"t{day:%Y%m%d}-\d{{9}}", txn_id) for txn_id in ids)
        keys = [(row["event_timestamp"], row["txn_id"]) for row in rows]
        assert keys == sorted(keys)
        day_start = datetime.combine(day, time(), tzinfo=timezone.utc)
        assert all(day_start <= row["event_timestamp"] < day_start + timedelta(days=1) for row in rows)
        # Microseconds are random, not rounded to seconds or milliseconds.
        assert len({row["event_timestamp"].microsecond % 1000 for row in rows}) > 100
        assert all(row["amount"] > 0 and round(row["amount"], 2) == row["amount"] for row in rows)
        assert {row["channel"] for row in rows} == {"pos", "ecom", "atm"}
    assert len(all_ids) == len(set(all_ids))


def test_chargebacks_follow_their_transactions(small_landing):
    con = _connect(small_landing[0])
    chargebacks, matched, min_delay, max_delay = con.execute("""
        SELECT count(*), count(t.txn_id), min(c.reported_timestamp - c.txn_timestamp), max(c.reported_timestamp - c.txn_timestamp)
        FROM chargebacks c LEFT JOIN transactions t
          ON t.txn_id = c.txn_id AND t.user_id = c.user_id AND t.merchant_id = c.merchant_id
         AND t.event_timestamp = c.txn_timestamp
    """).fetchone()
    assert chargebacks > 0
    assert matched == chargebacks
    assert timedelta(days=1) <= min_delay and max_delay <= timedelta(days=14)
    # Partitioned by the transaction's day, not the report's.
    for day in small_landing[1].days:
        partition = pq.read_table(_day_file(small_landing[0], "chargebacks", day))
        assert {timestamp.date() for timestamp in partition["txn_timestamp"].to_pylist()} <= {day}


def test_transactions_use_existing_users_and_open_merchants(small_landing):
    con = _connect(small_landing[0])
    orphans, not_yet_open = con.execute("""
        SELECT count(*) FILTER (WHERE u.user_id IS NULL OR m.merchant_id IS NULL),
               count(*) FILTER (WHERE m.created_timestamp >= t.event_timestamp OR u.signup_timestamp >= t.event_timestamp)
        FROM transactions t LEFT JOIN users u USING (user_id) LEFT JOIN merchants m USING (merchant_id)
    """).fetchone()
    assert (orphans, not_yet_open) == (0, 0)
    # Some merchants open during and after the generated days, so "new merchant" can happen at any time.
    assert con.execute(f"SELECT count(*) FROM merchants WHERE created_timestamp > TIMESTAMPTZ '{START} 00:00:00+00'").fetchone()[0] > 0


def test_large_day_is_written_in_time_slices(tmp_path, monkeypatch):
    monkeypatch.setattr(generator, "MAX_ROWS_PER_SLICE", 700)
    generate(tmp_path, START, days=1, transactions_per_day=2000, seed=7)
    path = _day_file(tmp_path, "transactions", START)
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    rows = pq.read_table(path).to_pylist()
    assert [row["txn_id"] for row in rows] == [f"t{START:%Y%m%d}-{number:09d}" for number in range(2000)]
    timestamps = [row["event_timestamp"] for row in rows]
    assert timestamps == sorted(timestamps)


def test_rejects_empty_runs(tmp_path):
    with pytest.raises(ValueError):
        generate(tmp_path, START, days=0, transactions_per_day=2000)


def _fraud_rate(con: duckdb.DuckDBPyConnection, condition: str) -> float:
    return con.execute(f"SELECT avg(fraud::INT) FROM labelled WHERE {condition}").fetchone()[0]


def test_planted_fraud_signals(large_landing):
    con = _connect(large_landing[0])
    base = _fraud_rate(con, "true")
    assert 0.01 <= base <= 0.03
    assert _fraud_rate(con, "user_txns_last_10_minutes >= 3") > 5 * base
    assert _fraud_rate(con, "new_merchant") > 3 * base
    assert _fraud_rate(con, "amount_to_user_median > 3") > 8 * base
    assert _fraud_rate(con, "abroad") > 2.5 * base
    assert _fraud_rate(con, "NOT abroad AND NOT new_merchant AND user_txns_last_10_minutes < 3") < base


def test_risky_merchants_stay_risky(large_landing):
    """The hidden merchant risk is learnable: merchants with much fraud in the first days keep it in the last days."""
    con = _connect(large_landing[0])
    split = f"TIMESTAMPTZ '{START + timedelta(days=3)} 00:00:00+00'"
    base = _fraud_rate(con, "true")
    later_rate_at_flagged, flagged = con.execute(f"""
        WITH earlier AS (
            SELECT merchant_id FROM labelled WHERE event_timestamp < {split}
            GROUP BY merchant_id HAVING count(*) >= 50 AND avg(fraud::INT) > {4 * base}
        )
        SELECT avg(fraud::INT), count(DISTINCT merchant_id) FROM labelled
        WHERE event_timestamp >= {split} AND merchant_id IN (SELECT merchant_id FROM earlier)
    """).fetchone()
    assert flagged >= 5
    assert later_rate_at_flagged > 3 * base
