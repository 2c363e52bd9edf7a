#!/usr/bin/env bash
# Start (or report) the Redis featurestack would use: the same discovery as `make demo`.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python -c '
from core.redis_server import ensure_redis
from core.settings import load_settings
settings = load_settings()
print(ensure_redis(settings.redis_url, settings.state_dir).describe())
'
