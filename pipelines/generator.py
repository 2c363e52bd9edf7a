"""Seeded card-payment generator: writes the parquet landing zone that the raw layer reads.

Deterministic: users and merchants come from (seed, start_date, transactions_per_day) and each day's
transactions from (seed, that day), so a day's files are byte-identical however many days a run covers.
Memory stays bounded at any scale: one day is generated and written at a time, and a day larger than
MAX_ROWS_PER_SLICE is cut into consecutive time slices written as separate row groups.

Fraud is planted so that it can be learned: it is likelier in bursts of one user's transactions within
minutes, at merchants created less than NEW_MERCHANT_AGE before, at a hidden set of risky merchants,
abroad and online; most fraudulent amounts are several times the user's hidden typical amount.
Only fraud gets a chargeback, reported 1 to 14 days after the transaction.

A planted drift (`AmountShift`) multiplies every amount of one chosen day, so the features derived from
amounts drift on that day and the others do not: what the drift monitor must tell apart.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.lake import partition_dir

TIMESTAMP = pa.timestamp("us", tz="UTC")

USERS_SCHEMA = pa.schema([
    ("user_id", pa.int64()),
    ("signup_timestamp", TIMESTAMP),
    ("home_country", pa.string()),
])
MERCHANTS_SCHEMA = pa.schema([
    ("merchant_id", pa.int64()),
    ("created_timestamp", TIMESTAMP),
    ("category", pa.string()),
    ("country", pa.string()),
])
TRANSACTIONS_SCHEMA = pa.schema([
    ("txn_id", pa.string()),
    ("user_id", pa.int64()),
    ("merchant_id", pa.int64()),
    ("amount", pa.float64()),
    ("currency", pa.string()),
    ("country", pa.string()),
    ("channel", pa.string()),
    ("event_timestamp", TIMESTAMP),
])
CHARGEBACKS_SCHEMA = pa.schema([
    ("txn_id", pa.string()),
    ("user_id", pa.int64()),
    ("merchant_id", pa.int64()),
    ("txn_timestamp", TIMESTAMP),
    ("reported_timestamp", TIMESTAMP),
])

# country -> (share of users and merchants, card currency, rough units of that currency per USD)
COUNTRIES = {
    "US": (0.30, "USD", 1.0), "GB": (0.12, "GBP", 0.8), "DE": (0.10, "EUR", 0.9), "FR": (0.08, "EUR", 0.9),
    "ES": (0.05, "EUR", 0.9), "IT": (0.05, "EUR", 0.9), "NL": (0.04, "EUR", 0.9), "JP": (0.06, "JPY", 150.0),
    "CH": (0.02, "CHF", 0.9), "CA": (0.05, "CAD", 1.4), "AU": (0.04, "AUD", 1.5), "SE": (0.03, "SEK", 10.5),
    "PL": (0.03, "PLN", 4.0), "BR": (0.03, "BRL", 5.0),
}
COUNTRY_CODES = pa.array(list(COUNTRIES))
COUNTRY_SHARES = np.array([share for share, _, _ in COUNTRIES.values()])
COUNTRY_CURRENCIES = pa.array([currency for _, currency, _ in COUNTRIES.values()])
COUNTRY_USD_RATES = np.array([rate for _, _, rate in COUNTRIES.values()])
CATEGORIES = pa.array(["grocery", "restaurants", "fuel", "fashion", "electronics", "travel",
                       "digital_goods", "entertainment", "health", "home"])
CHANNELS = pa.array(["pos", "ecom", "atm"])
ECOM = CHANNELS.to_pylist().index("ecom")

MAX_ROWS_PER_SLICE = 1_000_000
MICROS_PER_DAY = 86_400_000_000
MICROS_PER_SECOND = 1_000_000
USER_SIGNUP_WINDOW_DAYS = 3 * 365  # every user signed up before start_date
MERCHANT_CREATION_WINDOW_DAYS = (-365, 180)  # relative to start_date: some merchants open during the run
RISKY_MERCHANT_SHARE = 0.05
NEW_MERCHANT_AGE = timedelta(days=14)

# Normal traffic: most of it at home, in person.
NORMAL_CHANNEL_SHARES = (0.60, 0.30, 0.10)
NORMAL_ABROAD_SHARE = 0.08
# Bursts: one user, BURST_SIZE transactions a few tens of seconds apart (card testing, a stolen card).
BURST_TXN_SHARE = 0.03
BURST_SIZE = (3, 8)
BURST_MEAN_GAP_SECONDS = 45.0
BURST_WINDOW_MICROS = 10 * 60 * MICROS_PER_SECOND
BURST_CHANNEL_SHARES = (0.20, 0.75, 0.05)
BURST_ABROAD_SHARE = 0.5

# Fraud log-odds: a base rate of ~0.5% raised by each planted signal (overall ~2%).
FRAUD_LOGIT_BASE = -5.3
FRAUD_LOGIT_RISKY_MERCHANT = 2.8
FRAUD_LOGIT_NEW_MERCHANT = 2.2
FRAUD_LOGIT_ABROAD = 1.0
FRAUD_LOGIT_ECOM = 0.5
FRAUD_LOGIT_BURST = 3.5

# Amounts: user's typical amount (lognormal, in USD) times per-transaction noise; most fraud is inflated.
TYPICAL_AMOUNT_USD = (math.log(40.0), 0.8)
AMOUNT_NOISE_SIGMA = 0.5
FRAUD_INFLATED_SHARE = 0.7
FRAUD_AMOUNT_MULTIPLIER = (math.log(4.0), 0.35)
AMOUNT_RANGE = (1.0, 500_000.0)

CHARGEBACK_DELAY_DAYS = (1, 14)

# Independent RNG streams for the dimension tables and the days (a day's stream is keyed by its ordinal).
_USERS_STREAM, _MERCHANTS_STREAM, _DAY_STREAM = 1, 2, 3


@dataclass(frozen=True)
class AmountShift:
    """Every transaction amount of `day` multiplied by `factor` (the day's other columns unchanged)."""

    day: date
    factor: float

    def __post_init__(self) -> None:
        if not self.factor > 0:
            raise ValueError(f"amount shift factor must be positive, got {self.factor}")

    @classmethod
    def parse(cls, text: str) -> AmountShift:
        """`YYYY-MM-DD:FACTOR`, e.g. 2026-11-04:3"""
        day, sep, factor = text.partition(":")
        try:
            return cls(date.fromisoformat(day), float(factor))
        except ValueError as exc:
            raise ValueError(f"amount shift {text!r}: expected YYYY-MM-DD:FACTOR ({exc})") from exc


@dataclass(frozen=True)
class GenerationSummary:
    landing_dir: Path
    days: list[date]
    rows: dict[str, int]  # table -> rows written by this run (users, merchants, transactions, chargebacks)
    fraud_rate: float  # chargebacks / transactions


@dataclass(frozen=True)
class _Population:
    """Users and merchants, with the hidden traits that drive fraud. Index i is id i + 1."""
    user_signup_us: np.ndarray
    user_home_country: np.ndarray
    user_activity: np.ndarray  # probability that a normal transaction is this user's
    user_typical_amount: np.ndarray  # in the user's card currency
    merchant_created_us: np.ndarray  # ascending: ids are given in creation order
    merchant_country: np.ndarray
    merchant_category: np.ndarray
    merchant_risky: np.ndarray
    merchants_by_country: list[np.ndarray]  # per country index, its merchant indices (creation order)


def generate(landing_dir: Path, start_date: date, days: int, transactions_per_day: int, seed: int = 7,
             amount_shift: AmountShift | None = None) -> GenerationSummary:
    """Write users, merchants and `days` daily partitions of transactions and chargebacks from `start_date`
    (`amount_shift`: a planted drift of one day's amounts)."""
    if days < 1 or transactions_per_day < 1:
        raise ValueError(f"days and transactions_per_day must be positive, got {days} and {transactions_per_day}")
    landing_dir = Path(landing_dir)
    population = _build_population(seed, start_date, transactions_per_day)
    _write_table(_users_table(population), landing_dir / "users" / "users.parquet")
    _write_table(_merchants_table(population), landing_dir / "merchants" / "merchants.parquet")

    run_days = [start_date + timedelta(days=offset) for offset in range(days)]
    transactions = chargebacks = 0
    for day in run_days:
        factor = amount_shift.factor if amount_shift is not None and amount_shift.day == day else 1.0
        day_transactions, day_chargebacks = _write_day(landing_dir, population, day, transactions_per_day, seed, factor)
        transactions += day_transactions
        chargebacks += day_chargebacks
    return GenerationSummary(
        landing_dir=landing_dir,
        days=run_days,
        rows={
            "users": len(population.user_signup_us),
            "merchants": len(population.merchant_created_us),
            "transactions": transactions,
            "chargebacks": chargebacks,
        },
        fraud_rate=chargebacks / transactions,
    )


def _epoch_micros(day: date) -> int:
    return (day - date(1970, 1, 1)).days * MICROS_PER_DAY


def _build_population(seed: int, start_date: date, transactions_per_day: int) -> _Population:
    start_us = _epoch_micros(start_date)
    n_users = max(100, transactions_per_day // 5)
    n_merchants = max(20, transactions_per_day // 50)
    n_countries = len(COUNTRY_SHARES)

    users_rng = np.random.default_rng([seed, _USERS_STREAM])
    signup_us = np.sort(users_rng.integers(start_us - USER_SIGNUP_WINDOW_DAYS * MICROS_PER_DAY, start_us, n_users))
    home_country = users_rng.choice(n_countries, n_users, p=COUNTRY_SHARES)
    activity = users_rng.lognormal(0.0, 1.0, n_users)
    typical_usd = users_rng.lognormal(*TYPICAL_AMOUNT_USD, n_users)

    merchants_rng = np.random.default_rng([seed, _MERCHANTS_STREAM])
    first_day, last_day = MERCHANT_CREATION_WINDOW_DAYS
    created_us = np.sort(merchants_rng.integers(
        start_us + first_day * MICROS_PER_DAY, start_us + last_day * MICROS_PER_DAY, n_merchants))
    # The first merchant opens at the window start, so every transaction has an open merchant to use.
    created_us[0] = start_us + first_day * MICROS_PER_DAY
    merchant_country = merchants_rng.choice(n_countries, n_merchants, p=COUNTRY_SHARES)
    category = merchants_rng.integers(0, len(CATEGORIES), n_merchants)
    risky = np.zeros(n_merchants, dtype=bool)
    risky[merchants_rng.permutation(n_merchants)[:max(1, round(RISKY_MERCHANT_SHARE * n_merchants))]] = True

    return _Population(
        user_signup_us=signup_us,
        user_home_country=home_country,
        user_activity=activity / activity.sum(),
        user_typical_amount=typical_usd * COUNTRY_USD_RATES[home_country],
        merchant_created_us=created_us,
        merchant_country=merchant_country,
        merchant_category=category,
        merchant_risky=risky,
        merchants_by_country=[np.flatnonzero(merchant_country == country) for country in range(n_countries)],
    )


def _timestamps(micros: np.ndarray) -> pa.Array:
    return pa.array(micros.view("datetime64[us]"), type=TIMESTAMP)


def _ids(indices: np.ndarray) -> pa.Array:
    return pa.array(indices + 1, type=pa.int64())


def _users_table(population: _Population) -> pa.Table:
    return pa.table({
        "user_id": _ids(np.arange(len(population.user_signup_us))),
        "signup_timestamp": _timestamps(population.user_signup_us),
        "home_country": COUNTRY_CODES.take(population.user_home_country),
    }, schema=USERS_SCHEMA)


def _merchants_table(population: _Population) -> pa.Table:
    return pa.table({
        "merchant_id": _ids(np.arange(len(population.merchant_created_us))),
        "created_timestamp": _timestamps(population.merchant_created_us),
        "category": CATEGORIES.take(population.merchant_category),
        "country": COUNTRY_CODES.take(population.merchant_country),
    }, schema=MERCHANTS_SCHEMA)


def _temporary_path(path: Path) -> Path:
    # Dot-prefixed: Spark and pyarrow dataset readers skip hidden files, so a half-written file is never read.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _write_table(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_path(path)
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def _write_day(landing_dir: Path, population: _Population, day: date, transactions_per_day: int, seed: int,
               amount_factor: float) -> tuple[int, int]:
    """Write one day's transactions and chargebacks (slice by slice); return their row counts."""
    transactions_path = partition_dir(landing_dir / "transactions", day) / "part-00000.parquet"
    chargebacks_path = partition_dir(landing_dir / "chargebacks", day) / "part-00000.parquet"
    for path in (transactions_path, chargebacks_path):
        path.parent.mkdir(parents=True, exist_ok=True)

    n_slices = math.ceil(transactions_per_day / MAX_ROWS_PER_SLICE)
    slice_bounds_us = [_epoch_micros(day) + index * MICROS_PER_DAY // n_slices for index in range(n_slices + 1)]
    slice_rows = [len(rows) for rows in np.array_split(np.arange(transactions_per_day), n_slices)]
    txn_id_prefix = f"t{day:%Y%m%d}-"
    written_transactions = written_chargebacks = 0
    with pq.ParquetWriter(_temporary_path(transactions_path), TRANSACTIONS_SCHEMA) as transactions_writer, \
            pq.ParquetWriter(_temporary_path(chargebacks_path), CHARGEBACKS_SCHEMA) as chargebacks_writer:
        for index in range(n_slices):
            rng = np.random.default_rng([seed, _DAY_STREAM, day.toordinal(), index])
            transactions, chargebacks = _generate_slice(
                population, rng, slice_bounds_us[index], slice_bounds_us[index + 1], slice_rows[index],
                txn_id_prefix, first_txn_number=written_transactions, amount_factor=amount_factor,
            )
            transactions_writer.write_table(transactions)
            chargebacks_writer.write_table(chargebacks)
            written_transactions += transactions.num_rows
            written_chargebacks += chargebacks.num_rows
    os.replace(_temporary_path(transactions_path), transactions_path)
    os.replace(_temporary_path(chargebacks_path), chargebacks_path)
    return written_transactions, written_chargebacks


def _generate_slice(
    population: _Population, rng: np.random.Generator, start_us: int, end_us: int, n_rows: int,
    txn_id_prefix: str, first_txn_number: int, amount_factor: float = 1.0,
) -> tuple[pa.Table, pa.Table]:
    """`n_rows` transactions in [start_us, end_us), sorted by time, and the chargebacks of the fraudulent ones."""
    n_users = len(population.user_signup_us)
    n_countries = len(COUNTRY_SHARES)

    # Bursts first (a small share of the rows), then normal traffic fills the rest.
    n_bursts = int(n_rows * BURST_TXN_SHARE / (sum(BURST_SIZE) / 2))
    burst_sizes = rng.integers(BURST_SIZE[0], BURST_SIZE[1] + 1, n_bursts)
    burst_of_row = np.repeat(np.arange(n_bursts), burst_sizes)
    n_burst_rows = len(burst_of_row)
    n_normal_rows = n_rows - n_burst_rows

    burst_window_us = min(BURST_WINDOW_MICROS, (end_us - start_us) // 2)
    burst_start_us = rng.integers(start_us, end_us - burst_window_us, n_bursts)
    gaps_us = rng.exponential(BURST_MEAN_GAP_SECONDS * MICROS_PER_SECOND, n_burst_rows).astype(np.int64)
    elapsed_us = np.cumsum(gaps_us)
    # Each burst's first transaction is at its start: subtract the running total at that row.
    first_row_of_burst = np.cumsum(burst_sizes) - burst_sizes
    burst_offset_us = elapsed_us - elapsed_us[first_row_of_burst][burst_of_row]
    burst_ts_us = burst_start_us[burst_of_row] + np.minimum(burst_offset_us, burst_window_us - 1)
    burst_user = rng.integers(0, n_users, n_bursts)[burst_of_row]
    burst_abroad = (rng.random(n_bursts) < BURST_ABROAD_SHARE)[burst_of_row]
    burst_channel = rng.choice(len(CHANNELS), n_burst_rows, p=BURST_CHANNEL_SHARES)

    normal_ts_us = rng.integers(start_us, end_us, n_normal_rows)
    normal_user = rng.choice(n_users, n_normal_rows, p=population.user_activity)
    normal_abroad = rng.random(n_normal_rows) < NORMAL_ABROAD_SHARE
    normal_channel = rng.choice(len(CHANNELS), n_normal_rows, p=NORMAL_CHANNEL_SHARES)

    in_burst = np.arange(n_rows) < n_burst_rows
    ts_us = np.concatenate([burst_ts_us, normal_ts_us])
    user = np.concatenate([burst_user, normal_user])
    wants_abroad = np.concatenate([burst_abroad, normal_abroad])
    channel = np.concatenate([burst_channel, normal_channel])

    home = population.user_home_country[user]
    # Abroad means any other country; a shift of 1..n-1 never lands back home.
    target_country = np.where(wants_abroad, (home + rng.integers(1, n_countries, n_rows)) % n_countries, home)
    merchant = _pick_open_merchants(population, target_country, ts_us, rng.random(n_rows))
    country = population.merchant_country[merchant]

    new_merchant = ts_us - population.merchant_created_us[merchant] < NEW_MERCHANT_AGE // timedelta(microseconds=1)
    fraud_logit = (
        FRAUD_LOGIT_BASE
        + FRAUD_LOGIT_RISKY_MERCHANT * population.merchant_risky[merchant]
        + FRAUD_LOGIT_NEW_MERCHANT * new_merchant
        + FRAUD_LOGIT_ABROAD * (country != home)
        + FRAUD_LOGIT_ECOM * (channel == ECOM)
        + FRAUD_LOGIT_BURST * in_burst
    )
    is_fraud = rng.random(n_rows) < 1.0 / (1.0 + np.exp(-fraud_logit))

    amount = population.user_typical_amount[user] * rng.lognormal(0.0, AMOUNT_NOISE_SIGMA, n_rows)
    inflated = is_fraud & (rng.random(n_rows) < FRAUD_INFLATED_SHARE)
    amount = np.where(inflated, amount * rng.lognormal(*FRAUD_AMOUNT_MULTIPLIER, n_rows), amount)
    amount = np.round(np.clip(amount * amount_factor, *AMOUNT_RANGE), 2)
    chargeback_delay_us = rng.integers(
        CHARGEBACK_DELAY_DAYS[0] * MICROS_PER_DAY, CHARGEBACK_DELAY_DAYS[1] * MICROS_PER_DAY + 1, n_rows)

    # Stable sort on time; txn ids follow that order, so rows are sorted by (event_timestamp, txn_id).
    order = np.argsort(ts_us, kind="stable")
    ts_us, user, merchant, amount, country, channel, home, is_fraud, chargeback_delay_us = (
        column[order] for column in (ts_us, user, merchant, amount, country, channel, home, is_fraud, chargeback_delay_us)
    )
    txn_number = pa.array(np.arange(first_txn_number, first_txn_number + n_rows)).cast(pa.string())
    txn_id = pc.binary_join_element_wise(txn_id_prefix, pc.utf8_lpad(txn_number, 9, "0"), "")

    transactions = pa.table({
        "txn_id": txn_id,
        "user_id": _ids(user),
        "merchant_id": _ids(merchant),
        "amount": pa.array(amount, type=pa.float64()),
        "currency": COUNTRY_CURRENCIES.take(home),  # billed in the card's (home) currency
        "country": COUNTRY_CODES.take(country),
        "channel": CHANNELS.take(channel),
        "event_timestamp": _timestamps(ts_us),
    }, schema=TRANSACTIONS_SCHEMA)
    fraud_rows = np.flatnonzero(is_fraud)
    chargebacks = pa.table({
        "txn_id": txn_id.take(fraud_rows),
        "user_id": _ids(user[fraud_rows]),
        "merchant_id": _ids(merchant[fraud_rows]),
        "txn_timestamp": _timestamps(ts_us[fraud_rows]),
        "reported_timestamp": _timestamps(ts_us[fraud_rows] + chargeback_delay_us[fraud_rows]),
    }, schema=CHARGEBACKS_SCHEMA)
    return transactions, chargebacks


def _pick_open_merchants(population: _Population, target_country: np.ndarray, ts_us: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """A merchant per row, uniform among those created before its time, in its target country if one is open there."""
    merchant = np.full(len(ts_us), -1, dtype=np.int64)
    for country, merchants in enumerate(population.merchants_by_country):
        rows = np.flatnonzero(target_country == country)
        open_count = np.searchsorted(population.merchant_created_us[merchants], ts_us[rows], side="left")
        has_open = open_count > 0
        merchant[rows[has_open]] = merchants[(uniform[rows[has_open]] * open_count[has_open]).astype(np.int64)]
    # No merchant open in that country yet: any open merchant (ids are in creation order; the first is always open).
    fallback = np.flatnonzero(merchant < 0)
    open_count = np.searchsorted(population.merchant_created_us, ts_us[fallback], side="left")
    merchant[fallback] = (uniform[fallback] * open_count).astype(np.int64)
    return merchant
