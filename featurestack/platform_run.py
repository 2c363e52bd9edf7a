"""`featurestack run`: the Dagster asset graph, in-process, on the persistent Dagster instance (so the
UI shows these runs), one run per landed day. A partition whose inputs and code did not change since
its last successful run is skipped, which makes a second run quick and leaves the same result.

A failure stops only what depends on it, as a Dagster run that does not stop at the first error: a
failed asset, or an asset whose blocking check failed, blocks its downstream assets in that run and,
through the look-back partition mappings, in later days' runs; everything else still runs and
publishes. The summary lists what failed and what was blocked, and why.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date, timedelta

import dagster as dg

from core import lake
from core.redis_server import RedisEndpoint, ensure_redis, project_keys, record_redis_used, redis_client, redis_identity
from core.settings import PROJECT_ROOT, Settings

FINGERPRINT_TAG = "featurestack/fingerprint"
CODE_DIRS = ("core", "onlinestore", "pipelines", "assets", "serving", "featurestack")
# The full event log is in the Dagster instance (and the UI); the terminal gets warnings only.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class RunOutcome:
    settings: Settings
    redis: RedisEndpoint
    days: list[date]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "<asset>[<partition>] failed: why"
    blocked: list[str] = field(default_factory=list)  # "<asset>[<partition>]: blocked, needs <upstream> (why)"
    seconds: float = 0.0
    # (asset key, partition key or None) -> the root cause that makes it unusable for what reads it
    broken: dict[tuple[dg.AssetKey, str | None], str] = field(default_factory=dict)


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


Partition = tuple[dg.AssetKey, str | None]


def _label(key: dg.AssetKey, partition: str | None) -> str:
    return f"{key.to_user_string()}[{partition}]" if partition else key.to_user_string()


def _upstream(graph, key: dg.AssetKey, partition: str | None) -> list[Partition]:
    """The partitions of its parents that an asset partition reads (look-back windows included)."""
    parents: list[Partition] = []
    for parent in sorted(graph.get(key).parent_keys):
        if partition is None or not graph.get(parent).is_partitioned:
            parents.append((parent, None))
            continue
        mapping = graph.get_partition_mapping(key, parent)
        if isinstance(mapping, dg.TimeWindowPartitionMapping):
            day = date.fromisoformat(partition)
            parents += [(parent, (day + timedelta(days=offset)).isoformat()) for offset in range(mapping.start_offset, mapping.end_offset + 1)]
        else:
            parents.append((parent, partition))
    return parents


def _first_line(text: str | None, limit: int = 300) -> str:
    line = next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _failure_message(event: dg.DagsterEvent) -> str:
    """The user's exception (not Dagster's wrapper around it), first line."""
    error = event.event_specific_data.error
    while error.cause is not None:
        error = error.cause
    return _first_line(error.message)


def _record(result: dg.ExecuteInProcessResult, graph, keys: list[dg.AssetKey], partition: str | None, outcome: RunOutcome) -> None:
    """What of `keys` failed (the asset or a blocking check on it) or was skipped because of it."""
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    step_errors = {event.step_key: _failure_message(event) for event in result.get_step_failure_events()}
    failed_checks = {
        evaluation.asset_key: f"its blocking check {evaluation.check_name} failed: {_first_line(evaluation.description)}"
        for evaluation in result.get_asset_check_evaluations()
        if not evaluation.passed and graph.get(dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name)).blocking
    }
    for key in keys:
        here = (key, partition)
        if key.to_python_identifier() in step_errors or key in failed_checks:
            why = step_errors.get(key.to_python_identifier()) or failed_checks[key]
            outcome.broken[here] = f"{_label(*here)} failed: {why}"
            outcome.failed.append(outcome.broken[here])
        elif key not in materialized:
            parent = next((p for p in _upstream(graph, key, partition) if p in outcome.broken), None)
            outcome.broken[here] = outcome.broken[parent] if parent else f"{_label(*here)} was not materialized (see the run's log)"
            outcome.blocked.append(f"{_label(*here)}: blocked, needs {_label(*parent)} ({outcome.broken[here]})" if parent
                                   else outcome.broken[here])


def _execute(instance, job: dg.JobDefinition, graph, partition: str | None, fingerprint: str, force: bool, outcome: RunOutcome) -> None:
    """Run the job for one partition, without what depends on something broken (earlier in this
    `featurestack run`); never raises for a failing asset or check: they are recorded in `outcome`."""
    label = f"{job.name}[{partition}]" if partition else job.name
    problems = len(outcome.failed) + len(outcome.blocked)
    keys = [key for key in graph.toposorted_asset_keys if key in job.asset_layer.executable_asset_keys]
    runnable = []
    for key in keys:
        parent = next((p for p in _upstream(graph, key, partition) if p in outcome.broken), None)
        if parent is None:
            runnable.append(key)
            continue
        outcome.broken[key, partition] = outcome.broken[parent]
        outcome.blocked.append(f"{_label(key, partition)}: blocked, needs {_label(*parent)} ({outcome.broken[parent]})")
    if not runnable:
        print(f"  {label}: everything blocked (see the summary)")
        return
    if len(runnable) < len(keys):
        checks = {check for check in job.asset_layer.asset_graph.asset_check_keys if check.asset_key in runnable}
        job = job.get_subset(asset_selection=set(runnable), asset_check_selection=checks)
    elif not force and _already_done(instance, job, partition, fingerprint):
        outcome.skipped.append(label)
        print(f"  {label}: unchanged since its last run, skipped")
        return
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance, partition_key=partition, tags={FINGERPRINT_TAG: fingerprint}, run_config=QUIET_RUN_CONFIG,
        raise_on_error=False,
    )
    _record(result, graph, runnable, partition, outcome)
    outcome.ran.append(label)
    trouble = len(outcome.failed) + len(outcome.blocked) - problems
    done = "materialized" if result.success and not trouble else f"ran with {trouble} failed or blocked asset(s)"
    print(f"  {label}: {done} in {time.perf_counter() - started:.1f} s")


def run_platform(settings: Settings, days: int | None = None, force: bool = False, only: Collection[date] | None = None) -> RunOutcome:
    """`only`: run just these of the landed days (and the setup before them)."""
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
    if only is not None:
        selected = [day for day in selected if day in set(only)]

    from assets.definitions import CATALOG_JOB, DAILY_JOB, SETUP_JOB, build_definitions
    from core.feast_repo import load_repo_contents
    from pipelines.registry import history_days, pipeline_for_view

    # Redis may have been restarted empty (it keeps nothing on disk): then nothing counts as done.
    if not _redis_holds_project(endpoint.url, settings.feast_project, settings.redis_type):
        force = True
    definitions = build_definitions(settings)
    graph = definitions.resolve_asset_graph()
    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    outcome = RunOutcome(settings=settings, redis=endpoint, days=selected)
    code = lake.source_fingerprint([*(PROJECT_ROOT / name for name in CODE_DIRS), settings.feature_repo_dir])
    dimensions = lake.fingerprint([settings.landing_dir / table for table in lake.RAW_DIMENSION_TABLES])
    # The Redis URL may carry a password: only a hash of it goes into the (visible) run tags.
    setup_fingerprint = f"{code}-{dimensions}-{redis_identity(endpoint.url)}"
    _execute(instance, definitions.resolve_job_def(SETUP_JOB), graph, None, setup_fingerprint, force, outcome)
    daily = definitions.resolve_job_def(DAILY_JOB)
    complete_days = set(daily.partitions_def.get_partition_keys())
    for day in [day for day in selected if day.isoformat() not in complete_days]:
        print(f"  daily_features[{day}]: the day is not over yet (UTC), left for the schedule")
    selected = outcome.days = [day for day in selected if day.isoformat() in complete_days]
    # A day's result depends on the landed history its pipelines declare they read (their inputs).
    repo = load_repo_contents(settings)
    join_key_of = {entity.name: entity.join_key for entity in repo.entities}
    lookback = history_days(pipeline_for_view(view, [join_key_of[name] for name in view.entities], settings.feature_repo_dir)
                            for view in repo.feature_views)
    for day in selected:
        history = [
            lake.partition_dir(settings.landing_dir / table, day - timedelta(days=back))
            for table, days_back in lookback.items()
            for back in range(days_back + 1)
        ]
        day_fingerprint = f"{setup_fingerprint}-{lake.fingerprint([path for path in history if path.exists()])}"
        _execute(instance, daily, graph, day.isoformat(), day_fingerprint, force, outcome)
    if outcome.ran:
        _execute(instance, definitions.resolve_job_def(CATALOG_JOB), graph, None, setup_fingerprint, True, outcome)
    record_redis_used(settings.state_dir, endpoint)  # `featurestack status` compares the Redis it reads with this
    outcome.seconds = time.perf_counter() - started
    return outcome


def print_summary(outcome: RunOutcome) -> None:
    from core.feast_repo import load_repo_contents, open_store

    settings = outcome.settings
    print()
    print(f"featurestack ran {len(outcome.ran)} job run(s), skipped {len(outcome.skipped)} unchanged, in {outcome.seconds:.1f} s")
    print(f"days: {outcome.days[0]} .. {outcome.days[-1]}  profile: {settings.offline_profile}  project: {settings.feast_project}")
    if outcome.failed or outcome.blocked:
        print(f"\n{len(outcome.failed)} failed, {len(outcome.blocked)} blocked (everything else ran and published):")
        for line in outcome.failed:
            print(f"  FAILED  {line}")
        for line in outcome.blocked:
            print(f"  BLOCKED {line}")
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
    print("      `featurestack status` shows the lake and Redis, `make test` runs the tests;")
    print("      `featurestack train` then `featurestack replay` scores the last day through serving with the")
    print("      stream keeping features fresh and prints the training/serving skew (`--mode daily`: without it).")
