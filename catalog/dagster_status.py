"""What the Dagster instance knows about each feature view's assets: the last materialization per
partition of features/<view> and online/<view>, and the latest result of every asset check on them
(expectation suites, freshness checks, anything else: read generically, so new checks just appear).
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg

MATERIALIZATIONS_PER_ASSET = 2_000
CHECK_EVENTS_SCANNED = 20_000


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat() if timestamp is not None else None


def _plain(value: Any) -> Any:
    """A metadata value as JSON (tables, schemas and other rich values as text)."""
    raw = getattr(value, "value", value)
    if hasattr(raw, "_asdict"):
        raw = raw._asdict()
    try:
        json.dumps(raw)
        return raw
    except (TypeError, ValueError):
        return str(raw)


def _metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    return {key: _plain(value) for key, value in (metadata or {}).items()}


def open_instance(dagster_home: Path) -> dg.DagsterInstance | None:
    """The platform's Dagster instance if it was ever used (never creates one)."""
    if not dagster_home.is_dir() or not any(dagster_home.iterdir()):
        return None
    from dagster import DagsterInstance

    return DagsterInstance.from_config(str(dagster_home))


def materializations(instance: dg.DagsterInstance, asset_key: list[str]) -> dict[str, Any]:
    """Last materialization per partition ('' for an unpartitioned asset), newest first."""
    import dagster as dg

    result = instance.fetch_materializations(dg.AssetKey(asset_key), limit=MATERIALIZATIONS_PER_ASSET)
    latest: dict[str, dict[str, Any]] = {}
    for record in result.records:  # newest first
        partition = record.partition_key or ""
        if partition in latest:
            continue
        materialization = record.asset_materialization
        latest[partition] = {
            "partition": partition or None,
            "timestamp": _iso(record.timestamp),
            "run_id": record.run_id,
            "metadata": _metadata(materialization.metadata if materialization else None),
        }
    ordered = sorted(latest.values(), key=lambda m: (m["partition"] or "", m["timestamp"]), reverse=True)
    return {
        "asset": "/".join(asset_key),
        "last": max(latest.values(), key=lambda m: m["timestamp"]) if latest else None,
        "partitions": ordered,
    }


def check_evaluations(instance: dg.DagsterInstance, asset_keys: list[list[str]]) -> dict[str, list[dict[str, Any]]]:
    """asset ('features/x') -> latest evaluation of each (check, partition), newest first."""
    from dagster import DagsterEventType, EventRecordsFilter

    wanted = {"/".join(key) for key in asset_keys}
    found: dict[str, dict[tuple[str, str], dict[str, Any]]] = {name: {} for name in wanted}
    # The only query that lists check evaluations without knowing the check names beforehand (checks
    # are defined by other modules and may be added any time); deprecated for Dagster 2.0.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        records = instance.get_event_records(
            EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION), limit=CHECK_EVENTS_SCANNED, ascending=False
        )
    for record in records:
        event = record.event_log_entry.dagster_event
        evaluation = event.event_specific_data if event else None
        if evaluation is None:
            continue
        asset = evaluation.asset_key.to_user_string()
        if asset not in wanted:
            continue
        partition = getattr(evaluation, "partition", None) or ""
        slot = (evaluation.check_name, partition)
        if slot in found[asset]:
            continue
        severity = getattr(evaluation, "severity", None)
        found[asset][slot] = {
            "asset": asset,
            "check": evaluation.check_name,
            "partition": partition or None,
            "passed": bool(evaluation.passed),
            "severity": severity.value if severity is not None else "ERROR",
            "description": getattr(evaluation, "description", None),
            "timestamp": _iso(record.timestamp),
            "run_id": record.event_log_entry.run_id or None,
            "metadata": _metadata(evaluation.metadata),
        }
    return {
        asset: sorted(by_slot.values(), key=lambda c: c["timestamp"], reverse=True) for asset, by_slot in found.items()
    }


def view_status(instance: dg.DagsterInstance | None, view_names: list[str]) -> dict[str, dict[str, Any]]:
    """view -> {offline: materializations, online: materializations, checks: [...]} ({} without an instance)."""
    if instance is None:
        return {}
    keys = {name: (["features", name], ["online", name]) for name in view_names}
    checks = check_evaluations(instance, [key for pair in keys.values() for key in pair])
    return {
        name: {
            "offline": materializations(instance, offline),
            "online": materializations(instance, online),
            "checks": checks["/".join(offline)] + checks["/".join(online)],
        }
        for name, (offline, online) in keys.items()
    }
