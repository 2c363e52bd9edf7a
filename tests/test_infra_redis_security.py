"""Redis ACL user + password (and TLS options) from REDIS_URL reach both Feast's connection string and our
writer/reader, and the secret is never printed: endpoints describe themselves redacted."""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime, timezone

import pyarrow as pa
import pytest
import redis

from cluster_support import OwnRedis, free_port
from core.redis_server import ensure_redis, feast_connection_string, redact_url, redis_client
from core.settings import load_settings
from onlinestore.online_writer import publish_latest
from onlinestore.redis_layout import ViewLayout

pytestmark = pytest.mark.integration

SECRET = f"s3cret-{uuid.uuid4().hex[:12]}"
LAYOUT = ViewLayout("acl_view", (("user_id", "int64"),), (("score", "double"),))


def test_tls_and_credentials_become_feast_options():
    url = f"rediss://fsuser:{SECRET}@cache.internal:6380/2?ssl_ca_certs=/etc/redis/ca.pem&ssl_cert_reqs=required"
    assert feast_connection_string(url) == (
        f"cache.internal:6380,db=2,username=fsuser,password={SECRET},ssl=true,ssl_ca_certs=/etc/redis/ca.pem,ssl_cert_reqs=required"
    )
    assert feast_connection_string(url, "redis_cluster", ["n2:6380"]).startswith("cache.internal:6380,n2:6380,username=fsuser,")
    client = redis_client(url)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["ssl_ca_certs"]) == ("fsuser", SECRET, "/etc/redis/ca.pem")
    assert SECRET not in redact_url(url)


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_acl_user_reaches_writer_and_feast(tmp_path, monkeypatch, capsys):
    server = OwnRedis(free_port(), tmp_path / "redis", extra_args=(
        "--appendonly", "no", "--user", "default", "off", "--user", "fsuser", "on", f">{SECRET}", "~*", "&*", "+@all")).start()
    try:
        url = f"redis://fsuser:{SECRET}@127.0.0.1:{server.port}/0"
        with pytest.raises(redis.AuthenticationError):  # the default user is off: no anonymous access
            redis.Redis(port=server.port).ping()
        monkeypatch.setenv("REDIS_URL", url)
        settings = load_settings()
        endpoint = ensure_redis(settings.redis_url, tmp_path)
        print(endpoint.describe())
        client = redis_client(endpoint.url, settings.redis_type)
        stamp = datetime(2026, 11, 1, tzinfo=timezone.utc)
        table = pa.table({"user_id": pa.array([1, 2], pa.int64()), "score": [0.5, 0.25],
                          "event_timestamp": pa.array([stamp, stamp], pa.timestamp("us", tz="UTC"))})
        assert publish_latest(client, "fs_acl", LAYOUT, table).written == 2

        from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig

        store = RedisOnlineStore()
        feast_client = store._get_client(RedisOnlineStoreConfig(connection_string=feast_connection_string(endpoint.url)))
        assert feast_client.acl_whoami() == "fsuser"
        assert feast_client.dbsize() == 2
        output = capsys.readouterr().out
        assert "fsuser:***@" in output and SECRET not in output
    finally:
        server.kill()
