"""Sensors: run the freshness checks regularly, evaluate the assets' automation conditions, rebuild the
catalog after runs, and send every failed check to the alert sink.

The alert sink is a webhook (FEATURESTACK_ALERT_WEBHOOK_URL, JSON POST); when unset, alerts are
logged. Failed checks are read back from the run's event log, so Dagster's own freshness checks, our
suites, consistency and online freshness checks all alert the same way.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from datetime import datetime, timezone
from typing import Any

import dagster as dg

FRESHNESS_SENSOR_INTERVAL_S = 600
logger = logging.getLogger("featurestack.alerts")


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[dict[str, Any]]:
    """Every failed asset check evaluation of a run, as plain dicts."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    failures = []
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        failures.append({
            "asset": evaluation.asset_key.to_user_string(),
            "check": evaluation.check_name,
            "severity": evaluation.severity.value,
            "description": evaluation.description,
            "partition": evaluation.partition,
        })
    return failures


def send_alert(payload: dict[str, Any], webhook_url: str, timeout_s: float = 10.0) -> str:
    """POST `payload` as JSON to the webhook; log it when no webhook is configured. Returns where it went."""
    url = webhook_url
    if not url:
        logger.warning("featurestack alert (FEATURESTACK_ALERT_WEBHOOK_URL unset): %s", json.dumps(payload, default=str))
        return "log"
    request = urllib.request.Request(
        url, data=json.dumps(payload, default=str).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read()
    return url


def alert_failed_checks(instance: dg.DagsterInstance, run: dg.DagsterRun, webhook_url: str) -> dict[str, Any] | None:
    failures = failed_checks(instance, run.run_id)
    if not failures and run.status != dg.DagsterRunStatus.FAILURE:
        return None
    payload = {
        "source": "featurestack",
        "job": run.job_name,
        "run_id": run.run_id,
        "status": run.status.value,
        "partition": run.tags.get("dagster/partition"),
        "failed_checks": failures,
        "text": f"{run.job_name} run {run.run_id[:8]} {run.status.value}: "
                + ("; ".join(f"{f['asset']}:{f['check']} {f['description']}" for f in failures) or "the run failed"),
    }
    send_alert(payload, webhook_url)
    return payload


def alert_sensors(webhook_url: str) -> list[dg.SensorDefinition]:
    """The sensors that send failed checks and failed runs to `webhook_url` (settings.webhook_url, read at
    the edge; empty: the log)."""

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS, name="alert_on_failed_checks", default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends the failed asset checks of every finished run to the alert sink.",
    )
    def alert_on_failed_checks(context: dg.RunStatusSensorContext):
        alert_failed_checks(context.instance, context.dagster_run, webhook_url)

    @dg.run_failure_sensor(
        name="alert_on_failed_runs", default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends every failed run (a blocking check stopped it, an asset failed) to the alert sink.",
    )
    def alert_on_failed_runs(context: dg.RunFailureSensorContext):
        alert_failed_checks(context.instance, context.dagster_run, webhook_url)

    return [alert_on_failed_checks, alert_on_failed_runs]


def freshness_sensor(job_name: str) -> dg.SensorDefinition:
    @dg.sensor(
        name="freshness_checks_sensor", job_name=job_name, minimum_interval_seconds=FRESHNESS_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Runs the freshness checks (offline partitions, online `_ts`) every 10 minutes.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        return dg.RunRequest()

    return _sensor


AUTOMATION_SENSOR = "featurestack_automation"


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Declarative automation (the registry re-applied on change, online/<view> following its feature
    partitions), on by default so `featurestack dev`'s daemon evaluates it without a click."""
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR, target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30, emit_backfills=False,
        description="Evaluates every asset's AutomationCondition: feast_registry on code change, online/<view> after its feature partition.",
    )


CATALOG_SENSOR = "refresh_catalog_after_runs"
CATALOG_SENSOR_INTERVAL_S = 60


def catalog_refresh_sensor(catalog_job_name: str) -> dg.SensorDefinition:
    """Rebuilds the catalog snapshot once other runs finished (success or failure: a failed check is
    news for the catalog too), at most once a minute; its cursor is the last run update seen."""

    @dg.sensor(
        name=CATALOG_SENSOR, job_name=catalog_job_name, minimum_interval_seconds=CATALOG_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Rebuilds the feature catalog after runs finish, so freshness, checks and statistics stay current.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        if not context.cursor:  # the first tick starts watching from now
            context.update_cursor(str(datetime.now(timezone.utc).timestamp()))
            return dg.SkipReason("watching runs from now on")
        finished = context.instance.get_run_records(
            filters=dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
                updated_after=datetime.fromtimestamp(float(context.cursor), timezone.utc),
            ),
            limit=100,
        )
        if finished:
            context.update_cursor(str(max(record.update_timestamp.timestamp() for record in finished)))
        others = [record for record in finished if record.dagster_run.job_name != catalog_job_name]
        if not others:
            return dg.SkipReason("no run finished since the last catalog refresh")
        return dg.RunRequest(run_key=f"after-{max(record.update_timestamp.timestamp() for record in others)}")

    return _sensor
