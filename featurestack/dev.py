"""`featurestack dev`: `dagster dev` (webserver, daemon, code server, run workers) supervised, so that
Ctrl-C or SIGTERM stops all of it within core.shutdown.STOP_DEADLINE_S: the runs it launched
and that are still in flight are cancelled (marked CANCELING, so their workers end them as canceled
when interrupted; force-marked CANCELED if a worker had to be killed), then every process goes."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from core.shutdown import STOP_GRACE_S, end_child_processes, stops_on_signals

CANCEL_MESSAGE = "featurestack dev was stopped (SIGINT/SIGTERM): the run was cancelled"


def _in_flight_runs(instance, since: datetime) -> list:
    import dagster as dg
    from dagster._core.storage.tags import GRPC_INFO_TAG

    statuses = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=statuses, created_after=since))
    # Launched by a code server of `dagster dev` (not by an in-process `featurestack run` elsewhere).
    return [run for run in runs if GRPC_INFO_TAG in run.tags]


def run_dev(command: list[str], env: dict[str, str], dagster_home: Path) -> int:
    import dagster as dg  # before any signal: the stop path must not pay for this import

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    started = datetime.now(timezone.utc)
    # Its own session: a terminal's Ctrl-C reaches only us, so runs are marked cancelling before any
    # worker is interrupted (an interrupted run not marked so is recorded as failed).
    dagster_dev = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        with stops_on_signals() as stopping:
            while dagster_dev.poll() is None and not stopping.wait(0.2):
                pass
            if not stopping.is_set():
                return dagster_dev.returncode
            print("featurestack dev: stopping (in-flight runs are cancelled)", file=sys.stderr)
            cancelled = _in_flight_runs(instance, started)
            for run in cancelled:
                instance.report_run_canceling(run, message=CANCEL_MESSAGE)
            end_child_processes(STOP_GRACE_S)
            for run in cancelled:
                run = instance.get_run_by_id(run.run_id)
                # A run worker ended by the stop may have reported its own end (a failure) first, on a busy
                # machine: it was cancelled all the same. Only a run that succeeded meanwhile keeps its status.
                if run is not None and run.status not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.CANCELED):
                    instance.report_run_canceled(run, message=CANCEL_MESSAGE)
        return 0
    finally:
        instance.dispose()
