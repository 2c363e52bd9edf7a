"""Find a Redis to use, or start one.

Order: REDIS_URL when set (it must answer), else 127.0.0.1:6379 when it answers, else a
`redis-server` of our own on a free local port with its files under the state folder (reused by
later runs while it lives).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import redis
import redis.cluster

from core.settings import REDIS_TYPES

DEFAULT_LOCAL_URL = "redis://127.0.0.1:6379/0"


class RedisUnavailableError(RuntimeError):
    pass


@dataclass(frozen=True)
class RedisEndpoint:
    url: str
    origin: str  # "REDIS_URL", "local default" or "started by featurestack"

    def describe(self) -> str:
        return f"{redact_url(self.url)} ({self.origin})"


def redact_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def answers(url: str, timeout_s: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def project_keys(client: redis.Redis | redis.cluster.RedisCluster, project: str) -> Iterator[bytes]:
    """The keys of a Feast project in Redis: Feast ends every entity key with the project name. On a
    Redis Cluster (a RedisCluster client, see `redis_client`) every primary is scanned, each to its own
    cursor's end; a plain redis.Redis connected to one cluster node would see that node's keys only."""
    match = b"*" + project.encode()
    if isinstance(client, redis.cluster.RedisCluster):
        return client.scan_iter(match=match, count=10_000, target_nodes=redis.cluster.RedisCluster.PRIMARIES)
    return client.scan_iter(match=match, count=10_000)


def start_own_redis(state_dir: Path) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailableError(
            "No Redis reachable: REDIS_URL is unset, nothing answers on 127.0.0.1:6379, and no "
            "`redis-server` is on PATH to start one. Install it (Debian/Ubuntu: `apt-get install "
            "redis-server`, macOS: `brew install redis`) or set REDIS_URL=redis://host:port/0."
        )
    redis_dir = state_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    subprocess.run(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--daemonize", "yes",
         "--dir", str(redis_dir), "--pidfile", str(redis_dir / "redis.pid"),
         "--logfile", str(redis_dir / "redis.log"), "--save", "", "--appendonly", "no"],
        check=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not answers(url):
        if time.monotonic() > deadline:
            raise RedisUnavailableError(f"started {binary} on port {port} but it does not answer; see {redis_dir / 'redis.log'}")
        time.sleep(0.1)
    (redis_dir / "url").write_text(url)
    return url


def redis_identity(url: str) -> str:
    """A short fingerprint of the full URL (credentials included, so never the URL itself on disk)."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def _last_run_file(state_dir: Path) -> Path:
    return state_dir / "redis" / "last_run.json"


def record_redis_used(state_dir: Path, endpoint: RedisEndpoint) -> None:
    """Remember which Redis the last platform run wrote to (redacted URL and identity, no secret)."""
    path = _last_run_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"url": redact_url(endpoint.url), "identity": redis_identity(endpoint.url), "origin": endpoint.origin,
              "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(record))
    staged.replace(path)


def redis_used_last(state_dir: Path) -> dict | None:
    """What `record_redis_used` wrote, or None before the first run."""
    path = _last_run_file(state_dir)
    return json.loads(path.read_text()) if path.exists() else None


def find_redis(redis_url: str, state_dir: Path) -> RedisEndpoint | None:
    """The Redis `ensure_redis` would pick, without starting one: None when none answers."""
    if redis_url:
        return RedisEndpoint(redis_url, "REDIS_URL") if answers(redis_url, timeout_s=2.0) else None
    if answers(DEFAULT_LOCAL_URL):
        return RedisEndpoint(DEFAULT_LOCAL_URL, "local default")
    own_url_file = state_dir / "redis" / "url"
    if own_url_file.exists() and answers(own_url_file.read_text().strip()):
        return RedisEndpoint(own_url_file.read_text().strip(), "started by featurestack")
    return None


def ensure_redis(redis_url: str, state_dir: Path) -> RedisEndpoint:
    found = find_redis(redis_url, state_dir)
    if found is not None:
        return found
    if redis_url:
        raise RedisUnavailableError(f"REDIS_URL={redact_url(redis_url)} does not answer PING")
    return RedisEndpoint(start_own_redis(state_dir), "started by featurestack")


# TLS options a REDIS_URL may carry as query parameters (redis-py reads them in from_url; Feast gets
# them as connection-string options): rediss://user:pass@host:6380/0?ssl_ca_certs=/etc/redis/ca.pem
TLS_QUERY_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")


def redis_client(url: str, redis_type: str = "redis", **options) -> redis.Redis | redis.cluster.RedisCluster:
    """Our client for REDIS_URL (user, password and TLS options included): a plain redis.Redis, or a
    RedisCluster (the URL names one node; the others are discovered) when redis_type is redis_cluster."""
    if redis_type == "redis_cluster":
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, **options)
    if redis_type != "redis":
        raise ValueError(f"REDIS_TYPE must be one of {REDIS_TYPES}, got {redis_type!r}")
    return redis.Redis.from_url(url, **options)


def feast_connection_string(url: str, redis_type: str = "redis", cluster_nodes: list[str] | None = None) -> str:
    """redis[s]://[user:password@]host:port/db[?ssl_ca_certs=...] -> Feast's connection string
    'host:port,db=N[,username=...][,password=...][,ssl=true][,ssl_ca_certs=...]'. For a cluster: the
    node list (the URL's node plus `cluster_nodes`) and no db."""
    parsed = urlparse(url)
    parts = [f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"]
    if redis_type == "redis_cluster":
        parts += [node for node in cluster_nodes or [] if node not in parts]
    else:
        database = parsed.path.lstrip("/") or "0"
        parts.append(f"db={int(database)}")
    if parsed.username and parsed.username != "default":
        parts.append(f"username={unquote(parsed.username)}")
    if parsed.password:
        parts.append(f"password={unquote(parsed.password)}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    for key, values in parse_qs(parsed.query).items():
        if key in TLS_QUERY_OPTIONS:
            parts.append(f"{key}={values[-1]}")
    for part in parts:
        if part.count(",") or part.startswith("="):
            raise ValueError("a Redis option for Feast may not contain ',' (Feast splits its connection string on it)")
    return ",".join(parts)
