from __future__ import annotations

import shutil

import pytest
import redis

from core.redis_server import RedisUnavailableError, answers, ensure_redis, feast_connection_string, start_own_redis

pytestmark = pytest.mark.integration


def test_feast_connection_string_carries_db_password_and_tls():
    assert feast_connection_string("redis://127.0.0.1:6380/3") == "127.0.0.1:6380,db=3"
    assert feast_connection_string("rediss://:s3cret@cache:6379") == "cache:6379,db=0,password=s3cret,ssl=true"


def test_unreachable_redis_url_is_named_without_its_password(tmp_path):
    with pytest.raises(RedisUnavailableError, match=r"REDIS_URL=redis://:\*\*\*@127.0.0.1:1/0 does not answer"):
        ensure_redis("redis://:hunter2@127.0.0.1:1/0", tmp_path)


def test_starts_its_own_redis_when_none_is_configured(tmp_path):
    url = start_own_redis(tmp_path)
    try:
        assert answers(url)
        assert (tmp_path / "redis" / "url").read_text() == url
        # A later call reuses it instead of starting another.
        assert ensure_redis(url, tmp_path).url == url
    finally:
        redis.Redis.from_url(url).shutdown(nosave=True)
    assert not answers(url)


def test_no_binary_gives_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(RedisUnavailableError, match="apt-get install redis-server"):
        start_own_redis(tmp_path)
