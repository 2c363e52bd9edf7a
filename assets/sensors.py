"""Sensors: run the freshness checks regularly, and send every failed check to the alert sink.

The alert sink is a webhook (FEATURESTACK_ALERT_WEBHOOK_URL, JSON POST); when unset, alerts are
logged. Failed checks are read back from the run's event log, so Dagster's own freshness checks, our
suites, consistency and online freshness checks all alert the same way.
"""

from __future__ import annotations

import json
import logging
import urllib.request
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
