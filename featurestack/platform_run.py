"""`featurestack run`: the Dagster asset graph, in-process, on the persistent Dagster instance (so the
UI shows these runs), one run per landed day. A partition whose inputs and code did not change since
its last successful run is skipped, which makes a second run quick and leaves the same result."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import dagster as dg

from core import lake
from core.redis_server import RedisEndpoint, ensure_redis, project_keys, redis_client
from core.settings import PROJECT_ROOT, Settings

FINGERPRINT_TAG = "featurestack/fingerprint"
CODE_DIRS = ("core", "onlinestore", "pipelines", "assets", "feature_repo", "serving", "featurestack")
# The full event log is in the Dagster instance (and the UI); the terminal gets warnings only.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class RunOutcome:
    settings: Settings
    redis: RedisEndpoint
    days: list[date]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _already_done(instance: dg.DagsterInstance, job: dg.JobDefinition, partition: str | None, fingerprint: str) -> bool:
    for key in job.asset_layer.executable_asset_keys:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
        ).records
        if not records:
            return False
        run = instance.get_run_by_id(records[0].run_id)
        if run is None or run.tags.get(FINGERPRINT_TAG) != fingerprint:
            return False
    return True


def _redis_holds_project(url: str, project: str, redis_type: str = "redis") -> bool:
    """Whether Redis (every primary of a cluster) holds any key of the Feast project."""
    client = redis_client(url, redis_type)
    try:
        return next(project_keys(client, project), None) is not None
    finally:
        client.close()


def _execute(instance, job: dg.JobDefinition, partition: str | None, fingerprint: str, force: bool, outcome: RunOutcome) -> None:
    label = f"{job.name}[{partition}]" if partition else job.name
    if not force and _already_done(instance, job, partition, fingerprint):
        outcome.skipped.append(label)
        print(f"  {label}: unchanged since its last run, skipped")
        return
    started = time.perf_counter()
    job.execute_in_process(
        instance=instance, partition_key=partition, tags={FINGERPRINT_TAG: fingerprint}, run_config=QUIET_RUN_CONFIG
    )
    outcome.ran.append(label)
    print(f"  {label}: materialized in {time.perf_counter() - started:.1f} s")


def run_platform(settings: Settings, days: int | None = None, force: bool = False) -> RunOutcome:
    started = time.perf_counter()
    # The Dagster resources get these settings (build_definitions): with no REDIS_URL they find the same
    # Redis by the same discovery, so nothing is exported into the environment.
    endpoint = ensure_redis(settings.redis_url, settings.state_dir)
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    (settings.dagster_home / "dagster.yaml").touch()  # defaults: everything stored under the instance home
    print(f"Redis: {endpoint.describe()}")
    print(f"Dagster instance: {settings.dagster_home}")

    landed = lake.partition_dates(settings.landing_dir / "transactions")
    if not landed:
        raise SystemExit(f"no landing data under {settings.landing_dir}: run `featurestack generate` first")
    selected = landed[:days] if days else landed

    from assets.definitions import CATALOG_JOB, DAILY_JOB, SETUP_JOB, build_definitions
    from core.feast_repo import load_repo_contents
    from pipelines.registry import history_days, load_pipeline

    # Redis may have been restarted empty (it keeps nothing on disk): then nothing counts as done.
    if not _redis_holds_project(endpoint.url, settings.feast_project, settings.redis_type):
        force = True
    definitions = build_definitions(settings)
    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    outcome = RunOutcome(settings=settings, redis=endpoint, days=selected)
    code = lake.source_fingerprint([PROJECT_ROOT / name for name in CODE_DIRS])
    dimensions = lake.fingerprint([settings.landing_dir / table for table in lake.RAW_DIMENSION_TABLES])
    # The Redis URL may carry a password: only a hash of it goes into the (visible) run tags.
    redis_identity = hashlib.sha256(endpoint.url.encode()).hexdigest()[:12]
    setup_fingerprint = f"{code}-{dimensions}-{redis_identity}"
    _execute(instance, definitions.resolve_job_def(SETUP_JOB), None, setup_fingerprint, force, outcome)
    daily = definitions.resolve_job_def(DAILY_JOB)
    complete_days = set(daily.partitions_def.get_partition_keys())
    for day in [day for day in selected if day.isoformat() not in complete_days]:
        print(f"  daily_features[{day}]: the day is not over yet (UTC), left for the schedule")
    selected = outcome.days = [day for day in selected if day.isoformat() in complete_days]
    # A day's result depends on the landed history its pipelines declare they read (pipelines/<name>.py inputs).
    lookback = history_days(load_pipeline(view.tags["pipeline"]) for view in load_repo_contents(settings).feature_views)
    for day in selected:
        history = [
            lake.partition_dir(settings.landing_dir / table, day - timedelta(days=back))
            for table, days_back in lookback.items()
            for back in range(days_back + 1)
        ]
        day_fingerprint = f"{setup_fingerprint}-{lake.fingerprint([path for path in history if path.exists()])}"
        _execute(instance, daily, day.isoformat(), day_fingerprint, force, outcome)
    if outcome.ran:
        _execute(instance, definitions.resolve_job_def(CATALOG_JOB), None, day_fingerprint, True, outcome)
    outcome.seconds = time.perf_counter() - started
    return outcome


def print_summary(outcome: RunOutcome) -> None:
    from core.feast_repo import load_repo_contents, open_store

    settings = outcome.settings
    print()
    print(f"featurestack ran {len(outcome.ran)} job run(s), skipped {len(outcome.skipped)} unchanged, in {outcome.seconds:.1f} s")
    print(f"days: {outcome.days[0]} .. {outcome.days[-1]}  profile: {settings.offline_profile}  project: {settings.feast_project}")
    print("\nrows per table")
    for layer, root in (("landing", settings.landing_dir), ("raw", settings.raw_dir), ("quarantine", settings.quarantine_dir), ("offline", settings.offline_dir)):
        for table_dir in sorted(path for path in root.glob("*") if path.is_dir() and not path.name.startswith("_")):
            print(f"  {layer + '/' + table_dir.name:<28} {lake.row_count(table_dir):>12,}")

    contents = load_repo_contents(settings)
    print("\nfeatures per view")
    for view in sorted(contents.feature_views, key=lambda v: v.name):
        print(f"  {view.name:<16} {len(view.features):>2} features  entity={','.join(view.entities)}  ttl={view.ttl}")
    for service in contents.feature_services:
        print(f"  service {service.name}: {sum(len(p.features) for p in service.feature_view_projections)} features")

    client = redis_client(outcome.redis.url, settings.redis_type)
    keys = sum(1 for _ in project_keys(client, settings.feast_project))
    client.close()
    print(f"\nRedis {outcome.redis.describe()}: {keys:,} entity keys of project {settings.feast_project}")

    last_day = lake.partition_dates(settings.raw_dir / "transactions")[-1]
    import pyarrow.parquet as pq

    last_day_rows = pq.read_table(lake.partition_dir(settings.raw_dir / "transactions", last_day))
    last_txn = last_day_rows.slice(last_day_rows.num_rows - 1).to_pylist()[0]
    store = open_store(settings, outcome.redis.url)
    entity = {"user_id": last_txn["user_id"], "merchant_id": last_txn["merchant_id"]}
    online = store.get_online_features(features=store.get_feature_service("fraud_detection_v1"), entity_rows=[entity]).to_dict()
    print(f"\nexample online lookup (Feast SDK, feature service fraud_detection_v1) for {entity}:")
    for name, values in online.items():
        if name not in entity:
            print(f"  {name:<40} {values[0]}")
    print("\nnext: `make dev` opens the Dagster UI on http://127.0.0.1:3000 (dagster dev -w workspace.yaml),")
    print("      `featurestack catalog` serves the feature catalog on http://127.0.0.1:8080,")
    print("      `featurestack status` shows the lake and Redis, `make test` runs the tests.")
