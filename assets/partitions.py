from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import dagster as dg

from core import lake
from core.settings import Settings, utc_today


def first_partition_day(settings: Settings) -> date:
    """FEATURESTACK_START_DATE, else the first landed day of transactions, else yesterday (UTC)."""
    if settings.start_date is not None:
        return settings.start_date
    landed = lake.partition_dates(settings.landing_dir / "transactions")
    return landed[0] if landed else utc_today() - timedelta(days=1)


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=first_partition_day(settings).isoformat(), timezone="UTC")


def partition_date(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def day_window(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def lookback_dates(day: date, days_back: int) -> list[date]:
    return [day - timedelta(days=offset) for offset in range(days_back, -1, -1)]
