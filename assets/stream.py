"""The stream in Dagster: each windowed feature view's event stream as an observable source asset
(`stream/<view>`: events waiting, lag, events/s, live processors, dead letters) with a `stream_lag`
check, observed every minute by a sensor; a failing check alerts through the existing alert sensors.

The processors themselves run outside Dagster (`featurestack stream`, or the stream-processor
Deployment): a stream never finishes, so it is not a run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from assets.resources import PlatformResource
from eventlog.redis_streams import RedisEventLog
from core.windows import VIEW_TAG_SOURCE, is_windowed
from streaming.processor import consumer_group
from streaming.status import StreamStatus, stream_status

if TYPE_CHECKING:
    from feast import Entity, FeatureView

STREAM_JOB = "observe_streams"
STREAM_LAG_CHECK = "stream_lag"
MAX_LAG_TAG = "stream_max_lag_seconds"  # on the feature view; how long an event may wait to be applied
DEFAULT_MAX_LAG_S = 60.0
OBSERVE_INTERVAL_S = 60


def _status(platform: PlatformResource, view: "FeatureView", join_key: str) -> StreamStatus:
    settings = platform.settings
    return stream_status(RedisEventLog(platform.redis_client(), settings.feast_project, view.tags[VIEW_TAG_SOURCE], join_key,
                                       settings.stream.partitions, consumer_group(view.name)))


def stream_asset(view: "FeatureView", join_key: str) -> dg.SourceAsset:
    key = dg.AssetKey(["stream", view.name])

    @dg.observable_source_asset(
        key=key, group_name="stream", description=(
            f"The `{view.tags[VIEW_TAG_SOURCE]}` events that keep `{view.name}` fresh online (featurestack stream); "
            "observed every minute: events waiting, lag, events/s, processors, dead letters."),
        tags={"feast/feature_view": view.name}, owners=[view.owner] if view.owner else None,
    )
    def _observe(platform: PlatformResource) -> dg.ObserveResult:
        status = _status(platform, view, join_key)
        return dg.ObserveResult(metadata={
            "events_waiting": status.unprocessed, "lag_seconds": round(status.lag_seconds, 3),
            "events_per_second": round(status.events_per_second, 2), "processors": status.processors,
            "dead_letters": status.dead_letters,
        })

    return _observe


def stream_lag_check(view: "FeatureView", join_key: str) -> dg.AssetChecksDefinition:
    max_lag = float(view.tags.get(MAX_LAG_TAG, DEFAULT_MAX_LAG_S))

    @dg.asset_check(asset=dg.AssetKey(["stream", view.name]), name=STREAM_LAG_CHECK, description=(
        f"Fails when an event has waited more than {max_lag:g} s (tag {MAX_LAG_TAG}) to reach `{view.name}` online, "
        "or events wait while no processor is alive."))
    def _check(platform: PlatformResource) -> dg.AssetCheckResult:
        status = _status(platform, view, join_key)
        stalled = status.unprocessed > 0 and status.processors == 0
        passed = status.lag_seconds <= max_lag and not stalled
        return dg.AssetCheckResult(
            passed=passed, severity=dg.AssetCheckSeverity.ERROR,
            description=("no stream processor is running: " if stalled else "") + status.describe(),
            metadata={"lag_seconds": round(status.lag_seconds, 3), "max_lag_seconds": max_lag,
                      "events_waiting": status.unprocessed, "processors": status.processors},
        )

    return _check


def stream_definitions(views: "list[FeatureView]", entities: "list[Entity]"):
    """(observable assets, checks, job, sensor) for every windowed view."""
    join_key_of = {entity.name: entity.join_key for entity in entities}
    windowed = [(view, join_key_of[view.entities[0]]) for view in sorted(views, key=lambda v: v.name) if is_windowed(view)]
    assets = [stream_asset(view, key) for view, key in windowed]
    checks = [stream_lag_check(view, key) for view, key in windowed]
    if not assets:
        return [], [], [], []
    selection = dg.AssetSelection.assets(*(asset.key for asset in assets))
    job = dg.define_asset_job(STREAM_JOB, selection=selection,  # the checks of the selected assets ride along
                              description="Observe the event streams and check their lag.")

    @dg.sensor(name="observe_streams_sensor", job_name=STREAM_JOB, minimum_interval_seconds=OBSERVE_INTERVAL_S,
               default_status=dg.DefaultSensorStatus.RUNNING, description="Observes the event streams every minute.")
    def _sensor(context: dg.SensorEvaluationContext):
        return dg.RunRequest()

    return assets, checks, [job], [_sensor]
