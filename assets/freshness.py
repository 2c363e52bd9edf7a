"""Freshness, derived from each feature view's `freshness_sla_hours` tag.

Offline (Dagster's own freshness, as 1.13 supports it), both on the same daily deadline, (SLA - 24) h
UTC after a day closes (clamped to 0..23 h), so the policy and the checks turn red at the same tick:
  - per partition, a time-partition freshness check on features/<view>: the partition of day D must
    be materialized by that deadline on D+1. `build_time_partition_freshness_checks` is marked
    superseded by FreshnessPolicy in 1.13, but it is the one that looks at partitions;
  - a FreshnessPolicy.cron on features/<view> and online/<view> with the same deadline: a
    materialization within the day before it (the daily run). The FRESHNESS daemon of `dagster dev`
    evaluates it and the UI shows each asset Fresh/Degraded/Failing.
Online: the `online_freshness` check of each online/<view> (assets/checks.py) reads `_ts:<view>`.
The freshness job runs all of these; assets/sensors.py schedules it and alerts on failures.
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import TYPE_CHECKING

import dagster as dg

from assets.checks import ONLINE_FRESHNESS_CHECK
from core.feast_repo import sla_hours

if TYPE_CHECKING:
    from feast import FeatureView

FRESHNESS_JOB = "freshness_checks"


def deadline_cron(hours: float) -> str:
    """Daily deadline for the previous day's partition: (SLA - 24) h after the day closes, in 0..23."""
    return f"0 {min(23, max(0, int(hours) - 24))} * * *"


def freshness_policy(view: "FeatureView") -> dg.FreshnessPolicy:
    return dg.FreshnessPolicy.cron(
        deadline_cron=deadline_cron(sla_hours(view.name, view.tags)), lower_bound_delta=timedelta(days=1), timezone="UTC"
    )


def apply_freshness_policies(assets: list, views: "list[FeatureView]") -> list:
    policies = {}
    for view in views:
        policy = freshness_policy(view)
        policies[dg.AssetKey(["features", view.name])] = policy
        policies[dg.AssetKey(["online", view.name])] = policy

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        return dg.apply_freshness_policy(spec, policies[spec.key]) if spec.key in policies else spec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            dg.map_asset_specs(attach, [asset])[0] if any(key in policies for key in getattr(asset, "keys", ())) else asset
            for asset in assets
        ]


def partition_freshness_checks(views: "list[FeatureView]") -> list[dg.AssetChecksDefinition]:
    by_deadline: dict[str, list[dg.AssetKey]] = {}
    for view in sorted(views, key=lambda v: v.name):
        by_deadline.setdefault(deadline_cron(sla_hours(view.name, view.tags)), []).append(dg.AssetKey(["features", view.name]))
    checks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cron, keys in sorted(by_deadline.items()):
            checks += dg.build_time_partition_freshness_checks(assets=keys, deadline_cron=cron, timezone="UTC")
    return checks


def freshness_check_keys(views: "list[FeatureView]", partition_checks: list[dg.AssetChecksDefinition]) -> list[dg.AssetCheckKey]:
    online = [dg.AssetCheckKey(dg.AssetKey(["online", view.name]), ONLINE_FRESHNESS_CHECK) for view in views]
    return [*online, *(key for check in partition_checks for key in check.check_keys)]


def freshness_job(check_keys: list[dg.AssetCheckKey]) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        FRESHNESS_JOB, selection=dg.AssetSelection.checks(*check_keys),
        description="Freshness of every feature view, offline (partitions) and online (Redis `_ts`), against its SLA tag.",
    )
