"""Labels as they really arrive: a chargeback is reported 1 to 14 days after its transaction.

A training run sees the world as of its label cutoff: a transaction is fraud iff a chargeback for it
was reported by the cutoff, transactions after the cutoff do not exist yet, and a transaction's label
has matured once its whole reporting window (`label_maturity_days`, the service's tag) lies before the
cutoff. An immature row's "not fraud" may still turn into fraud, so its metrics are reported apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import duckdb
import pandas as pd

from core.settings import Settings

MATURITY_TAG = "label_maturity_days"
DEFAULT_MATURITY_DAYS = 14  # the longest chargeback delay of the raw contract's feed
# The entity rows of a training set: what get_historical_features joins on, plus the label as of the cutoff.
ENTITY_COLUMNS = ("txn_id", "user_id", "merchant_id", "amount", "event_timestamp", "is_fraud", "label_matured")


@dataclass(frozen=True)
class LabelWindow:
    cutoff: datetime  # UTC
    maturity: timedelta

    @classmethod
    def for_service(cls, service_tags: dict[str, str], cutoff: datetime | None = None) -> LabelWindow:
        """The service's maturity tag (default 14 days) and `cutoff` (default now, UTC)."""
        raw = service_tags.get(MATURITY_TAG, str(DEFAULT_MATURITY_DAYS))
        try:
            days = float(raw)
        except ValueError:
            days = float("nan")
        if not days >= 0:
            raise ValueError(f"feature service tag {MATURITY_TAG}={raw!r} is not a non-negative number of days")
        moment = cutoff or datetime.now(timezone.utc)
        if moment.tzinfo is None:
            raise ValueError(f"label cutoff {moment.isoformat()} has no time zone: give it in UTC (e.g. 2026-11-30T00:00:00+00:00)")
        return cls(cutoff=moment.astimezone(timezone.utc), maturity=timedelta(days=days))

    @classmethod
    def from_described(cls, described: dict[str, str]) -> LabelWindow:
        """The inverse of `describe` (a training set's parquet carries it)."""
        if not {"cutoff", "maturity_days"} <= set(described):
            raise ValueError(f"training set without its label window (cutoff, maturity_days): {sorted(described)}; rebuild it")
        return cls(cutoff=datetime.fromisoformat(described["cutoff"]), maturity=timedelta(days=float(described["maturity_days"])))

    def describe(self) -> dict[str, str]:
        return {"cutoff": self.cutoff.isoformat(), "maturity_days": f"{self.maturity / timedelta(days=1):g}"}


def labelled_transactions(settings: Settings, window: LabelWindow) -> pd.DataFrame:
    """Every raw transaction before the cutoff with its label as known at the cutoff, as entity rows.

    The entity timestamp is one microsecond before the transaction: the features are then the state
    just before it, exactly what serving reads from Redis when the transaction comes in."""
    cutoff = window.cutoff.replace(tzinfo=None)  # written below as a UTC literal
    return duckdb.sql(f"""
        SELECT t.txn_id, t.user_id, t.merchant_id, t.amount,
               t.event_timestamp - INTERVAL 1 MICROSECOND AS event_timestamp,
               (c.txn_id IS NOT NULL)::INTEGER AS is_fraud,
               t.event_timestamp + INTERVAL {int(window.maturity.total_seconds() * 1_000_000)} MICROSECOND
                   <= TIMESTAMPTZ '{cutoff.isoformat()}+00:00' AS label_matured
        FROM read_parquet('{settings.raw_dir / "transactions"}/*/*.parquet') t
        LEFT JOIN (SELECT DISTINCT txn_id FROM read_parquet('{settings.raw_dir / "chargebacks"}/*/*.parquet')
                   WHERE reported_timestamp <= TIMESTAMPTZ '{cutoff.isoformat()}+00:00') c USING (txn_id)
        WHERE t.event_timestamp < TIMESTAMPTZ '{cutoff.isoformat()}+00:00'
        ORDER BY t.event_timestamp, t.txn_id
    """).df()
