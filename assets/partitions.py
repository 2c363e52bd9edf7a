from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import dagster as dg

from core.settings import Settings


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=settings.start_date.isoformat(), timezone="UTC")


def partition_date(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def day_window(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def lookback_dates(day: date, days_back: int) -> list[date]:
    return [day - timedelta(days=offset) for offset in range(days_back, -1, -1)]
