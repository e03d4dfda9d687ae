"""`manage.py check --deploy` carries the service's own checks: debug, the metrics token, trusted
proxies, and Redis's eviction policy and persistence (read from a private redis-server configured
for each case; the shared Redis is only read)."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from core import checks
from memora.tests.redisproc import RedisProcess, free_port

GOOD_TOKEN = "t" * 40


def ids(messages: list[Any]) -> list[str]:
    return sorted(m.id for m in messages)


@pytest.fixture
def redis_at(settings: Any) -> Any:
    def point(url: str) -> None:
        settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"], "LOCATION": url}}

    return point


@pytest.fixture
def private_redis(tmp_path: Path, redis_at: Any) -> Iterator[RedisProcess]:
    """A redis-server started with noeviction and AOF; each test reconfigures its own copy."""
    server = RedisProcess(tmp_path / "redis", aof=True)
    server.start()
    redis_at(server.url)
    yield server
    server.stop()


def test_debug_on_is_an_error(settings):
    settings.DEBUG = True
    assert ids(checks.check_debug()) == ["memora.E001"]
    settings.DEBUG = False
    assert checks.check_debug() == []


@pytest.mark.parametrize(
    ("token", "expected"),
    [("", ["memora.W001"]), ("short-token", ["memora.W002"]), (GOOD_TOKEN, [])],
)
def test_metrics_token(settings, token, expected):
    settings.MEMORA_METRICS_TOKEN = token
    assert ids(checks.check_metrics_token()) == expected


@pytest.mark.parametrize(
    ("proxies", "expected"),
    [
        (["10.0.0.5", "10.1.0.0/24", "fd00::/8"], []),
        (["10.0.0.5", "proxy.internal"], ["memora.E002"]),
        (["0.0.0.0/0"], ["memora.E003"]),
        (["::/0"], ["memora.E003"]),
    ],
)
def test_trusted_proxies_are_valid_and_not_everyone(settings, private_redis, proxies, expected):
    settings.MEMORA_TRUSTED_PROXIES = proxies
    assert ids(checks.check_trusted_proxies()) == expected


def test_a_proxy_in_use_without_trusted_proxies_is_flagged(settings, private_redis):
    settings.MEMORA_TRUSTED_PROXIES = []
    assert checks.check_trusted_proxies() == []
    private_redis.client().set(f"{settings.MEMORA_REDIS_KEY_PREFIX}:proxyflag", "10.0.0.5", ex=60)
    assert ids(checks.check_trusted_proxies()) == ["memora.W003"]
    settings.MEMORA_TRUSTED_PROXIES = ["10.0.0.5"]
    assert checks.check_trusted_proxies() == []


def test_redis_with_noeviction_and_aof_passes(private_redis):
    assert checks.check_redis() == []


def test_redis_that_evicts_is_flagged(private_redis):
    private_redis.client().config_set("maxmemory-policy", "allkeys-lru")
    assert ids(checks.check_redis()) == ["memora.W012"]


def test_redis_without_persistence_is_flagged(private_redis):
    client = private_redis.client()
    client.config_set("appendonly", "no")
    assert ids(checks.check_redis()) == ["memora.W013"]
    client.config_set("save", "3600 1")  # RDB snapshots only
    assert ids(checks.check_redis()) == ["memora.W014"]


def test_unreachable_redis_is_a_warning_not_a_crash(redis_at, settings):
    redis_at(f"redis://:secret-password@127.0.0.1:{free_port()}/0")
    messages = checks.check_redis()
    assert ids(messages) == ["memora.W010"]
    assert "secret-password" not in messages[0].msg
    settings.MEMORA_TRUSTED_PROXIES = []
    assert checks.check_trusted_proxies() == []  # the flag cannot be read: no crash either


def test_check_deploy_runs_the_service_checks(settings, private_redis):
    settings.DEBUG = False
    settings.MEMORA_METRICS_TOKEN = ""
    private_redis.client().config_set("maxmemory-policy", "volatile-lru")
    with pytest.raises(SystemCheckError) as caught:
        call_command("check", "--deploy", "--tag", "memora", "--fail-level", "WARNING", stdout=StringIO())
    assert "memora.W001" in str(caught.value)
    assert "memora.W012" in str(caught.value)
    settings.MEMORA_METRICS_TOKEN = GOOD_TOKEN
    private_redis.client().config_set("maxmemory-policy", "noeviction")
    out = StringIO()
    call_command("check", "--deploy", "--tag", "memora", "--fail-level", "WARNING", stdout=out)
    assert "no issues" in out.getvalue()
