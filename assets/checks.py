"""Asset checks, derived like the assets: from the Feast feature views and the raw contracts.

  raw/<table>          expectation_suite (BLOCKING): the table's GX suite on the landing partition
                       (a few bad rows are quarantined and flow on; a broken feed stops the day)
  features/<view>      expectation_suite (BLOCKING): the view's GX suite on the offline partition;
                       failing, online/<view> is not published in that run: Redis keeps its values
  online/<view>        consistency: sampled online values == latest offline values (skew), per partition
                       online_freshness: newest `_ts:<view>` of sampled entities within the view's SLA
                       (not in the daily job: the freshness job runs it, see assets/freshness.py)

A check's metadata names the failing expectations, their observed values and offending rows.
The reference time of freshness checks is `now`, or the run tag featurestack/reference_time (ISO).
"""

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import warnings

import dagster as dg

from assets.resources import PlatformResource
from core.feast_repo import SLA_TAG, VIEW_MODULES, sla_hours, view_module
from core.settings import Settings
from pipelines.registry import RAW_DIMENSION_TABLES, RAW_PARTITIONED_TABLES
from onlinestore.redis_layout import ViewLayout, layout_from_feature_view

if TYPE_CHECKING:
    from feast import Entity, FeatureView

    from validations.runner import Suite, ValidationResult

SUITE_CHECK = "expectation_suite"
CONSISTENCY_CHECK = "online_offline_consistency"
ONLINE_FRESHNESS_CHECK = "online_freshness"
REFERENCE_TIME_TAG = "featurestack/reference_time"
SAMPLE_ENTITIES = 200


def _asset_check(**kwargs):
    """dg.asset_check; per-partition checks (partitions_def) are a preview feature in Dagster 1.13."""
    def decorate(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return dg.asset_check(**kwargs)(fn)
    return decorate


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return (text[:60] + "...") if len(text) > 63 else text.replace("|", "\\|")


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    columns = list(dict.fromkeys(name for row in rows for name in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(name)) for name in columns) + " |" for row in rows]
    return "\n".join(lines)


def suite_metadata(result: "ValidationResult") -> dict[str, Any]:
    failed = [
        {"expectation": o.expectation, "column": o.column, "observed": o.observed, "unexpected_rows": o.unexpected_count,
         "unexpected_percent": None if o.unexpected_percent is None else round(o.unexpected_percent, 3),
         "rule": {k: v for k, v in o.kwargs.items() if k not in ("column", "column_list", "column_A", "column_B")}}
        for o in result.failed
    ]
    return {
        "suite": result.defined_in,
        "rows": result.rows,
        "expectations": len(result.outcomes),
        "failed_expectations": dg.MetadataValue.md(_markdown_table(failed)),
        "failed": dg.MetadataValue.json(failed),
        "observed_values": dg.MetadataValue.json({
            f"{o.expectation}({o.column or 'table'})": o.observed for o in result.outcomes if o.observed is not None
        }),
        "offending_rows_sample": dg.MetadataValue.md(_markdown_table(result.failing_sample)),
        "validation_seconds": round(result.seconds, 3),
    }


def suite_check(
    asset_key: dg.AssetKey, suite: "Callable[[], Suite | str]", defined_in: str, table_dir: Callable[[Settings], Path],
    partitions_def: dg.PartitionsDefinition | None, description: str, raw_dir: Callable[[Settings], Path] | None = None,
) -> dg.AssetChecksDefinition:
    """The blocking check running `suite()` (built in the step: GX is imported there only)."""
    @_asset_check(
        asset=asset_key, name=SUITE_CHECK, blocking=True, partitions_def=partitions_def,
        description=description, metadata={"suite": defined_in},
    )
    def _check(context: dg.AssetCheckExecutionContext, platform: PlatformResource) -> dg.AssetCheckResult:
        from validations.runner import validate_partition

        day = date.fromisoformat(context.partition_key) if partitions_def is not None else None
        result = validate_partition(suite(), table_dir(platform.settings), day, raw_dir(platform.settings) if raw_dir else None)
        if not result.success:
            context.log.error(result.summary())
        return dg.AssetCheckResult(
            passed=result.success, severity=dg.AssetCheckSeverity.ERROR, description=result.summary()[:2000],
            metadata=suite_metadata(result),
        )

    return _check


def raw_suite_checks(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    checks = []
    for table in (*RAW_PARTITIONED_TABLES, *RAW_DIMENSION_TABLES):
        checks.append(suite_check(
            dg.AssetKey(["raw", table]), lambda table=table: table, f"validations/suites/{table}.py",
            lambda settings, table=table: settings.landing_dir / table,
            partitions_def if table in RAW_PARTITIONED_TABLES else None,
            f"GX suite `{table}` on the landing input: more than a few contract-breaking rows stop the day.",
            raw_dir=lambda settings: settings.raw_dir,
        ))
    return checks


def _sla(view: "FeatureView") -> timedelta:
    return timedelta(hours=sla_hours(view.name, view.tags))


def view_layout(view: "FeatureView", entities: "list[Entity]") -> ViewLayout:
    """The Redis layout of a view as parsed from feature_repo/ (its join keys are filled in only once
    applied to a registry, so they come from its entities here)."""
    by_name = {entity.name: entity for entity in entities}
    layout = layout_from_feature_view(view, {entity.join_key: entity.value_type for entity in entities})
    join_keys = tuple((by_name[name].join_key, by_name[name].value_type.name.lower()) for name in view.entities)
    return ViewLayout(name=layout.name, join_keys=join_keys, features=layout.features, ttl=layout.ttl)


def reference_time(context: dg.AssetCheckExecutionContext) -> datetime:
    raw = context.run.tags.get(REFERENCE_TIME_TAG)
    if not raw:
        return datetime.now(timezone.utc)
    parsed = datetime.fromisoformat(raw)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def feature_view_checks(
    view: "FeatureView", entities: "list[Entity]", partitions_def: dg.PartitionsDefinition, repo_dir: Path
) -> list[dg.AssetChecksDefinition]:
    from validations.online import consistency, offline_latest_sample, online_freshness

    layout = view_layout(view, entities)
    join_keys = [key for key, _ in layout.join_keys]
    join_key_types = {entity.join_key: entity.value_type.name for entity in entities if entity.name in view.entities}
    sla = _sla(view)

    def suite() -> "Suite":
        from validations.feature_suite import feature_view_suite

        return feature_view_suite(view, join_key_types, view_module(repo_dir, view.name))

    features_check = suite_check(
        dg.AssetKey(["features", view.name]), suite, f"feature_repo/{VIEW_MODULES}/{view.name}.py",
        lambda settings: settings.offline_dir / view.name, partitions_def,
        f"GX suite `{view.name}` on the partition (the view's schema and its module's expectations); "
        f"BLOCKING: a failure stops online/{view.name} in that run.",
    )
    online_key = dg.AssetKey(["online", view.name])

    @_asset_check(
        asset=online_key, name=CONSISTENCY_CHECK, partitions_def=partitions_def,
        description=f"Online values of {SAMPLE_ENTITIES} sampled entities equal their latest offline values (0 mismatches).",
    )
    def _consistency(context: dg.AssetCheckExecutionContext, platform: PlatformResource) -> dg.AssetCheckResult:
        settings = platform.settings
        day = date.fromisoformat(context.partition_key)
        expected = offline_latest_sample(settings.offline_dir / view.name, join_keys, SAMPLE_ENTITIES, up_to=day)
        client = platform.redis_client()
        try:
            outcome = consistency(client, settings.feast_project, layout, expected)
        finally:
            client.close()
        return dg.AssetCheckResult(
            passed=outcome.passed, severity=dg.AssetCheckSeverity.ERROR, description=outcome.describe(),
            metadata={
                "mismatch_rate": outcome.mismatch_rate, "sampled": outcome.sampled, "compared": outcome.compared,
                "mismatched_entities": outcome.mismatched_entities, "missing_online": outcome.missing_online,
                "newer_online": outcome.newer_online,
                "mismatches_sample": dg.MetadataValue.md(_markdown_table(outcome.mismatches)),
            },
        )

    @_asset_check(
        asset=online_key, name=ONLINE_FRESHNESS_CHECK,
        description=f"Newest `_ts:{view.name}` in Redis of sampled entities is at most {sla.total_seconds() / 3600:g} h old (tag {SLA_TAG}).",
        metadata={SLA_TAG: sla.total_seconds() / 3600},
    )
    def _online_freshness(context: dg.AssetCheckExecutionContext, platform: PlatformResource) -> dg.AssetCheckResult:
        settings = platform.settings
        now = reference_time(context)
        try:
            entities_sample = offline_latest_sample(settings.offline_dir / view.name, join_keys, SAMPLE_ENTITIES).select(join_keys).to_pylist()
        except FileNotFoundError:
            entities_sample = []
        client = platform.redis_client()
        try:
            outcome = online_freshness(client, settings.feast_project, layout, entities_sample, sla, now)
        finally:
            client.close()
        return dg.AssetCheckResult(
            passed=outcome.passed, severity=dg.AssetCheckSeverity.ERROR, description=outcome.describe(),
            metadata={
                "reference_time": now.isoformat(), "sla_hours": sla.total_seconds() / 3600,
                "newest_online": outcome.newest.isoformat() if outcome.newest else None,
                "oldest_online": outcome.oldest.isoformat() if outcome.oldest else None,
                "age_hours": None if outcome.age is None else round(outcome.age.total_seconds() / 3600, 2),
                "sampled": outcome.sampled, "found_online": outcome.found,
            },
        )

    return [features_check, _consistency, _online_freshness]


def all_checks(
    views: "list[FeatureView]", entities: "list[Entity]", partitions_def: dg.PartitionsDefinition, repo_dir: Path
) -> list[dg.AssetChecksDefinition]:
    checks = raw_suite_checks(partitions_def)
    for view in sorted(views, key=lambda v: v.name):
        checks += feature_view_checks(view, entities, partitions_def, repo_dir)
    return checks
