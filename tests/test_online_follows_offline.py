"""Online follows offline: a feature partition rematerialized outside the daily job (as from the UI) makes
the automation sensor request that day's online/<view>, with its checks riding along; nothing else."""

from __future__ import annotations

import pytest

import dagster as dg

from assets.checks import CONSISTENCY_CHECK
from assets.definitions import build_definitions
from assets.sensors import AUTOMATION_SENSOR

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_rematerialized_feature_partition_is_republished_with_its_checks(platform):
    defs = build_definitions(platform.settings)
    sensor = next(sensor for sensor in defs.sensors if sensor.name == AUTOMATION_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    instance = dg.DagsterInstance.from_config(str(platform.settings.dagster_home))
    day = platform.days[0].isoformat()
    features, online = dg.AssetKey(["features", "user_velocity"]), dg.AssetKey(["online", "user_velocity"])

    # After the daily runs (features and online in the same run) nothing is due.
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert settled.get_requested_partitions(online) == set()

    # Rematerialize one old feature partition, as the UI's "Materialize" does (its suite check included).
    result = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={features}).execute_in_process(
        instance=instance, partition_key=day,
    )
    suites = [check for check in result.get_asset_check_evaluations() if check.check_name == "expectation_suite"]
    assert result.success and [check.passed for check in suites] == [True]
    due = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
    assert due.get_requested_partitions(online) == {day}  # that day only, though it is not the latest
    assert due.total_requested == 1
    # The online checks have no condition of their own, so Dagster runs them along with the asset.
    graph = defs.resolve_asset_graph()
    assert dg.AssetCheckKey(online, CONSISTENCY_CHECK) in graph.get_check_keys_for_assets({online})
    assert graph.get(dg.AssetCheckKey(online, CONSISTENCY_CHECK)).automation_condition is None

    # Once handled, it is not requested again.
    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=due.cursor)
    assert again.get_requested_partitions(online) == set()
