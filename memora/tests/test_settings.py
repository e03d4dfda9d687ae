"""Settings that cannot work stop the process at start, with the reason, instead of a 500 later."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from memora.tests.redisproc import RedisProcess

ROOT = Path(__file__).resolve().parents[2]


def start(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "memora_project.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_bad_trusted_proxy_fails_at_start():
    result = start(DJANGO_DEBUG="1", MEMORA_TRUSTED_PROXIES="10.0.0.0/8,not-an-address")
    assert result.returncode != 0
    assert "MEMORA_TRUSTED_PROXIES: 'not-an-address'" in result.stderr


def test_production_needs_a_secret_key():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "memora_project.settings", "DJANGO_DEBUG": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_deploy_checks_pass_with_production_settings(tmp_path):
    # The service's checks read Redis: a private one configured as production's must be (noeviction, AOF).
    redis = RedisProcess(tmp_path / "redis", aof=True)
    redis.start()
    production = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "a-long-random-production-secret-" + "x" * 40,
        "DJANGO_SECURE": "1",
        "DJANGO_ALLOWED_HOSTS": "memora.example.org",
        "MEMORA_METRICS_TOKEN": "a-long-random-metrics-token-" + "y" * 20,
        "REDIS_URL": redis.url,
    }
    try:
        result = start(**production)
        assert result.returncode == 0, result.stderr
        check = subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            cwd=ROOT,
            env={**os.environ, **production},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        redis.stop()


def show_redis_settings(**env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "o = s.CACHES['default']['OPTIONS']; "
        "print(s.CACHES['default']['LOCATION'], o.get('CONNECTION_FACTORY'), o.get('SENTINELS'), "
        "o['CONNECTION_POOL_KWARGS']['connection_class'].__name__, s.MEMORA_REDIS_CLUSTER, s.CELERY_BROKER_URL)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "memora_project.settings", "DJANGO_DEBUG": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sentinel_settings_go_to_django_redis_sentinel_factory():
    result = show_redis_settings(
        MEMORA_REDIS_SENTINELS="s1:26379, s2:26380",
        MEMORA_REDIS_SENTINEL_SERVICE="memora",
        REDIS_URL="redis://ignored:6379/3",
        CELERY_BROKER_URL="redis://broker:6379/0",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(" ", 2)[:2] == ["redis://memora/3", "django_redis.pool.SentinelConnectionFactory"]
    assert "[('s1', 26379), ('s2', 26380)] SentinelIdentityConnection False redis://broker:6379/0" in result.stdout


def test_cluster_and_sentinel_settings_name_their_broker():
    sentinel = {"MEMORA_REDIS_SENTINELS": "s1:1", "MEMORA_REDIS_SENTINEL_SERVICE": "m"}
    for extra in ({"MEMORA_REDIS_CLUSTER": "1"}, sentinel):
        env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
        result = subprocess.run(
            [sys.executable, "-c", "import django; django.setup()"],
            cwd=ROOT,
            env={**env, "DJANGO_SETTINGS_MODULE": "memora_project.settings", "DJANGO_DEBUG": "1", **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        assert "CELERY_BROKER_URL" in result.stderr
    cluster = show_redis_settings(
        MEMORA_REDIS_CLUSTER="1", REDIS_URL="redis://node-a:6379/0", CELERY_BROKER_URL="redis://broker:6379/0"
    )
    assert cluster.returncode == 0, cluster.stderr
    assert cluster.stdout.split() == [
        "redis://node-a:6379/0", "None", "None", "IdentityConnection", "True", "redis://broker:6379/0",
    ]  # fmt: skip


def test_sentinels_need_a_service_name():
    result = start(DJANGO_DEBUG="1", MEMORA_REDIS_SENTINELS="s1:26379", CELERY_BROKER_URL="redis://b:6379/0")
    assert result.returncode != 0
    assert "MEMORA_REDIS_SENTINEL_SERVICE" in result.stderr
