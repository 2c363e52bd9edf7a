"""`featurestack status`: the lake, the registry and Redis at a glance (fast: no Spark, no Feast)."""

from __future__ import annotations

from core import lake
from core.redis_server import DEFAULT_LOCAL_URL, answers, project_keys, redact_url, redis_client
from core.settings import Settings


def _redis_url_in_use(settings: Settings) -> str | None:
    own = settings.state_dir / "redis" / "url"
    candidates = [settings.redis_url] if settings.redis_url else [DEFAULT_LOCAL_URL, own.read_text().strip() if own.exists() else ""]
    return next((url for url in candidates if url and answers(url)), None)


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
    url = _redis_url_in_use(settings)
    if url is None:
        print("redis        none answering (run `make demo` or set REDIS_URL)")
        return
    client = redis_client(url, settings.redis_type)  # a cluster client counts every primary's keys
    keys = sum(1 for _ in project_keys(client, settings.feast_project))
    client.close()
    print(f"redis        {redact_url(url)}: {keys:,} entity keys of project {settings.feast_project}")
