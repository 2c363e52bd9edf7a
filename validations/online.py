"""Checks of the online store (Redis, Feast's layout) against the offline store: freshness of the
`_ts:<view>` timestamps and online/offline consistency (training-serving skew). No Dagster, no Feast:
the values are read with our codec of Feast's layout (onlinestore.redis_layout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import redis

from core.lake import PARTITION_FILES_GLOB, partition_date_of
from onlinestore.redis_layout import ViewLayout, decode_timestamp, decode_value, redis_key, serialize_entity_key

DEFAULT_SAMPLE = 200


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def offline_latest_sample(
    table_dir: Path, join_keys: list[str], sample: int = DEFAULT_SAMPLE, up_to: date | None = None, seed: int = 7
) -> pa.Table:
    """A deterministic sample of entities with their latest offline row (over partitions <= `up_to`)."""
    files = sorted(
        str(path) for path in Path(table_dir).glob(PARTITION_FILES_GLOB)
        if up_to is None or partition_date_of(path) <= up_to
    )
    if not files:
        raise FileNotFoundError(f"no offline partitions under {table_dir}" + (f" up to {up_to}" if up_to else ""))
    keys = ", ".join(_quoted(k) for k in join_keys)
    sql = f"""
        WITH latest AS (
            SELECT * EXCLUDE (filename, file_row_number) FROM read_parquet($files, filename = true, file_row_number = true)
            QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY event_timestamp DESC, filename DESC, file_row_number DESC) = 1
        )
        SELECT * FROM latest ORDER BY hash({keys}, {seed}) LIMIT {int(sample)}
    """
    connection = duckdb.connect()
    try:
        return connection.sql(sql, params={"files": files}).to_arrow_table()
    finally:
        connection.close()


def _keys(layout: ViewLayout, project: str, rows: list[dict[str, Any]]) -> list[bytes]:
    types = dict(layout.join_keys)
    return [redis_key(project, serialize_entity_key({k: row[k] for k in types}, types)) for row in rows]


def _as_utc(nanos: int) -> datetime:
    return datetime.fromtimestamp(nanos / 1e9, tz=timezone.utc)


@dataclass(frozen=True)
class OnlineFreshness:
    view: str
    sla: timedelta
    reference_time: datetime
    sampled: int
    found: int  # sampled entities that have a `_ts:<view>` in Redis
    newest: datetime | None
    oldest: datetime | None

    @property
    def age(self) -> timedelta | None:
        return None if self.newest is None else self.reference_time - self.newest

    @property
    def passed(self) -> bool:
        return self.age is not None and self.age <= self.sla

    def describe(self) -> str:
        if self.newest is None:
            return f"{self.view}: none of {self.sampled} sampled entities has a value online (`_ts:{self.view}` missing)"
        verdict = "within" if self.passed else "OLDER than"
        hours = self.age.total_seconds() / 3600
        return (f"{self.view}: newest online value of {self.found}/{self.sampled} sampled entities is from "
                f"{self.newest.isoformat()}, {hours:.1f} h before {self.reference_time.isoformat()}: {verdict} the "
                f"SLA of {self.sla.total_seconds() / 3600:g} h")


def online_freshness(
    client: redis.Redis, project: str, layout: ViewLayout, entities: list[dict[str, Any]], sla: timedelta, reference_time: datetime
) -> OnlineFreshness:
    """Read `_ts:<view>` of the given entities; fresh when the newest is at most `sla` old at `reference_time`."""
    pipe = client.pipeline(transaction=False)
    for key in _keys(layout, project, entities):
        pipe.hget(key, layout.ts_field)
    stamps = [decode_timestamp(raw) for raw in pipe.execute() if raw]
    stamps = [nanos for nanos in stamps if nanos]
    return OnlineFreshness(
        view=layout.name, sla=sla, reference_time=reference_time, sampled=len(entities), found=len(stamps),
        newest=_as_utc(max(stamps)) if stamps else None, oldest=_as_utc(min(stamps)) if stamps else None,
    )


@dataclass(frozen=True)
class Consistency:
    view: str
    sampled: int
    compared: int  # entities whose online timestamp equals the offline latest (same row expected)
    missing_online: int
    newer_online: int  # Redis already holds a newer row (a later partition was published): not compared
    mismatched_entities: int
    mismatches: list[dict[str, Any]] = field(default_factory=list)  # a sample: entity, feature, online, offline

    @property
    def mismatch_rate(self) -> float:
        checked = self.compared + self.missing_online
        return (self.mismatched_entities + self.missing_online) / checked if checked else 0.0

    @property
    def passed(self) -> bool:
        return self.sampled > 0 and self.mismatch_rate == 0.0

    def describe(self) -> str:
        return (f"{self.view}: online/offline mismatch rate {self.mismatch_rate:.2%} over {self.compared + self.missing_online} "
                f"sampled entities ({self.mismatched_entities} with differing values, {self.missing_online} missing online, "
                f"{self.newer_online} newer online and not compared)")


def _same(online: Any, offline: Any) -> bool:
    if offline is None or (isinstance(offline, float) and math.isnan(offline)):
        return online is None
    if online is None:
        return False
    if isinstance(offline, float) or isinstance(online, float):
        return math.isclose(float(online), float(offline), rel_tol=1e-12, abs_tol=1e-12)
    return online == offline


def consistency(client: redis.Redis, project: str, layout: ViewLayout, expected: pa.Table, max_reported: int = 10) -> Consistency:
    """Compare the online values of the entities of `expected` (their latest offline rows) with Redis."""
    rows = expected.to_pylist()
    fields = [layout.ts_field, *layout.feature_fields()]
    pipe = client.pipeline(transaction=False)
    for key in _keys(layout, project, rows):
        pipe.hmget(key, fields)
    compared = missing = newer = mismatched = 0
    mismatches: list[dict[str, Any]] = []
    join_keys = [k for k, _ in layout.join_keys]
    for row, values in zip(rows, pipe.execute()):
        online_ts = decode_timestamp(values[0]) if values[0] else 0
        offline_ts = int(row["event_timestamp"].timestamp() * 1_000_000) * 1000
        entity = {k: row[k] for k in join_keys}
        if not online_ts:
            missing += 1
            if len(mismatches) < max_reported:
                mismatches.append({"entity": entity, "feature": "_ts", "online": None, "offline": row["event_timestamp"].isoformat()})
            continue
        if online_ts // 1000 > offline_ts // 1000:
            newer += 1
            continue
        compared += 1
        bad = []
        if online_ts // 1000 != offline_ts // 1000:
            bad.append(("_ts", _as_utc(online_ts).isoformat(), row["event_timestamp"].isoformat()))
        for (feature, _), raw in zip(layout.features, values[1:]):
            online_value = decode_value(raw)
            if not _same(online_value, row[feature]):
                bad.append((feature, online_value, row[feature]))
        if bad:
            mismatched += 1
            for feature, online_value, offline_value in bad:
                if len(mismatches) < max_reported:
                    mismatches.append({"entity": entity, "feature": feature, "online": online_value, "offline": offline_value})
    return Consistency(
        view=layout.name, sampled=len(rows), compared=compared, missing_online=missing, newer_online=newer,
        mismatched_entities=mismatched, mismatches=mismatches,
    )
