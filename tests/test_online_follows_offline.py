"""Online follows offline: a feature partition rematerialized outside the daily job (as from the UI) makes
the automation sensor request that day's online/<view>, with its checks riding along; nothing else."""

from __future__ import annotations

import dagster as dg

from assets.checks import CONSISTENCY_CHECK
from assets.definitions import build_definitions
from assets.sensors import AUTOMATION_SENSOR


def test_a_rematerialized_feature_partition_is_republished_with_its_checks(platform):
    defs = build_definitions(platform.settings)
    sensor = next(sensor for sensor in defs.sensors if sensor.name == AUTOMATION_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    instance = dg.DagsterInstance.from_config(str(platform.settings.dagster_home))
    day = platform.days[0].isoformat()
    features, online = dg.AssetKey(["features", "user_velocity"]), dg.AssetKey(["online", "user_velocity"])

    # After the daily runs (features and online in the same run) nothing is due.
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert [request for request in settled.run_requests if online in (request.asset_selection or [])] == []

    # Rematerialize one old feature partition, as the UI's "Materialize" does (its suite check included).
    result = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={features}).execute_in_process(
        instance=instance, partition_key=day,
    )
    assert result.success
    due = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
    requested = [(request.partition_key, list(request.asset_selection or []), set(request.asset_check_keys or []))
                 for request in due.run_requests]
    assert requested == [(day, [online], requested[0][2])]
    assert dg.AssetCheckKey(online, CONSISTENCY_CHECK) in requested[0][2]

    # Once handled, it is not requested again.
    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=due.cursor)
    assert [request for request in again.run_requests if online in (request.asset_selection or [])] == []
