"""`featurestack status`: the lake, the registry and Redis at a glance (fast: no Spark, no Feast)."""

from __future__ import annotations

from core import lake
from core.redis_server import RedisEndpoint, find_redis, project_keys, redis_client, redis_identity, redis_used_last
from core.settings import Settings


def _when(last_run: dict) -> str:
    return last_run["at"][:19].replace("T", " ") + " UTC"


def redis_lines(settings: Settings, endpoint: RedisEndpoint | None) -> list[str]:
    """Which Redis status reads (found as `featurestack run` finds it), and whether the last run used it."""
    last = redis_used_last(settings.state_dir)
    if endpoint is None:
        lines = ["redis        none answering (run `make demo` or set REDIS_URL)"]
    else:
        lines = [f"redis        reading {endpoint.describe()}"]
    if last is None:
        lines.append("             no `featurestack run` recorded in this state folder yet")
    elif endpoint is not None and last["identity"] == redis_identity(endpoint.url):
        lines.append(f"             the Redis the last run used ({_when(last)})")
    else:
        lines.append(f"             NOT the Redis the last run used ({_when(last)}): {last['url']} ({last['origin']});"
                     f" set REDIS_URL to it to read what that run published")
    return lines


def print_status(settings: Settings) -> None:
    print(f"state        {settings.state_dir}")
    print(f"profile      {settings.offline_profile} ({settings.feature_store_yaml.name})")
    print(f"spark        {settings.spark_master}")
    registry = settings.registry_path
    print(f"registry     {registry} ({'present' if registry.exists() else 'not applied yet'})")
    for layer, root in (("landing", settings.landing_dir), ("raw", settings.raw_dir), ("quarantine", settings.quarantine_dir), ("offline", settings.offline_dir)):
        tables = sorted(path for path in root.glob("*") if path.is_dir() and not path.name.startswith("_")) if root.exists() else []
        for table_dir in tables:
            days = lake.partition_dates(table_dir)
            span = f"{len(days)} day(s) {days[0]}..{days[-1]}" if days else "snapshot"
            print(f"{layer:<12} {table_dir.name:<16} {lake.row_count(table_dir):>12,} rows  {span}")
    endpoint = find_redis(settings.redis_url, settings.state_dir)
    for line in redis_lines(settings, endpoint):
        print(line)
    if endpoint is None:
        return
    client = redis_client(endpoint.url, settings.redis_type)  # a cluster client counts every primary's keys
    keys = sum(1 for _ in project_keys(client, settings.feast_project))
    client.close()
    print(f"             {keys:,} entity keys of project {settings.feast_project}")
