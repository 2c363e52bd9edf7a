"""The catalog snapshot refreshes itself after runs: a sensor requests the catalog job when other runs
finish, and a running catalog server serves the snapshot file the asset rewrote."""

from __future__ import annotations

import time

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from assets.sensors import catalog_refresh_sensor
from catalog.snapshot import catalog_dir, read_snapshot, write_snapshot
from catalog.web import CatalogState, create_app
from catalog_support import build_small_catalog

pytestmark = pytest.mark.integration


@dg.op
def _noop():
    return 1


@dg.job(name="some_other_job")
def other_job():
    _noop()


@dg.job(name="refresh_catalog")
def catalog_job():
    _noop()


def test_the_sensor_requests_a_catalog_refresh_after_other_runs_only():
    sensor = catalog_refresh_sensor("refresh_catalog")
    with dg.instance_for_test() as instance:
        other_job.execute_in_process(instance=instance)  # before the sensor ever ran: not its business
        context = dg.build_sensor_context(instance=instance)
        assert isinstance(sensor(context), dg.SkipReason)
        cursor = context.cursor
        assert cursor

        catalog_job.execute_in_process(instance=instance)  # the catalog's own run: no new refresh
        context = dg.build_sensor_context(instance=instance, cursor=cursor)
        assert isinstance(sensor(context), dg.SkipReason)
        sensor_cursor = context.cursor

        other_job.execute_in_process(instance=instance)
        context = dg.build_sensor_context(instance=instance, cursor=sensor_cursor)
        request = sensor(context)
        assert isinstance(request, dg.RunRequest)
        context = dg.build_sensor_context(instance=instance, cursor=context.cursor)
        assert isinstance(sensor(context), dg.SkipReason)  # once per finished run


def test_a_running_catalog_serves_the_rewritten_snapshot(tmp_path):
    with pytest.MonkeyPatch.context() as monkeypatch:
        snapshot, settings = build_small_catalog(tmp_path, monkeypatch)
    path = write_snapshot(snapshot, catalog_dir(settings))
    state = CatalogState(read_snapshot(path), follow=path)
    with TestClient(create_app(state)) as client:
        assert client.get("/healthz").json()["generated_at"] == snapshot["generated_at"]
        time.sleep(0.01)  # a distinct mtime on coarse filesystems
        write_snapshot({**snapshot, "generated_at": "2030-01-01T00:00:00+00:00"}, catalog_dir(settings))
        assert client.get("/healthz").json()["generated_at"] == "2030-01-01T00:00:00+00:00"
        assert client.get("/api/features").status_code == 200
