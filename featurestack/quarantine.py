"""What the raw contracts quarantined, and the replay of rows that broke a referential rule.

A row quarantined as `unknown_user`, `unknown_merchant` or `unknown_transaction` may be fine once the
late dimension row (or transaction) lands. `replay` reruns the setup (a new users/merchants snapshot
becomes raw) and every day whose quarantine holds such rows: the raw assets judge those days' landing
rows again, so the rows now known reach raw, the features and Redis; the rest stay quarantined.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import lake
from core.settings import Settings
from pipelines.contracts import CONTRACTS, QUARANTINE_REASON, REFERENTIAL_REASONS

if TYPE_CHECKING:
    from featurestack.platform_run import RunOutcome


def quarantined_rows(settings: Settings) -> dict[tuple[str, date | None], Counter]:
    """(table, day or None for a snapshot) -> rows per quarantine reason."""
    counts: dict[tuple[str, date | None], Counter] = {}
    for table in CONTRACTS:
        root = settings.quarantine_dir / table
        days = lake.partition_dates(root) if root.exists() else []
        paths = [(day, root / f"date={day.isoformat()}") for day in days] or ([(None, root)] if root.exists() else [])
        for day, path in paths:
            reasons = pc.value_counts(pq.read_table(path, columns=[QUARANTINE_REASON]).column(QUARANTINE_REASON))
            found = Counter({item["values"].as_py(): item["counts"].as_py() for item in reasons})
            if found:
                counts[table, day] = found
    return counts


def referential(counts: dict[tuple[str, date | None], Counter]) -> dict[tuple[str, date | None], Counter]:
    picked = {where: Counter({r: n for r, n in reasons.items() if r in REFERENTIAL_REASONS}) for where, reasons in counts.items()}
    return {where: reasons for where, reasons in picked.items() if reasons}


@dataclass
class Replay:
    before: dict[tuple[str, date | None], Counter]  # referential quarantine before the replay
    after: dict[tuple[str, date | None], Counter]
    days: list[date]
    outcome: RunOutcome | None  # the rerun (None: nothing to replay)

    @property
    def released(self) -> int:
        """Rows that left the quarantine: their referenced row now exists."""
        return sum(sum(c.values()) for c in self.before.values()) - sum(sum(c.values()) for c in self.after.values())


def replay(settings: Settings) -> Replay:
    from featurestack.platform_run import run_platform

    before = referential(quarantined_rows(settings))
    days = sorted({day for _table, day in before if day is not None})
    if not days:
        return Replay(before, before, [], None)
    outcome = run_platform(settings, force=True, only=days)
    return Replay(before, referential(quarantined_rows(settings)), days, outcome)
