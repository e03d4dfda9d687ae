"""The service's own deployment checks, run by ``manage.py check --deploy`` beside Django's.

Each reads the settings or asks Redis (CONFIG GET, INFO) with a generous timeout of its own; an
unreachable Redis gives a warning, never a crash: the check is what an operator runs while
setting up, often before every server is there.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import redis
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from core import clientip

# A check runs once per command, not on a request path: wait for a busy or distant Redis.
REDIS_CHECK_TIMEOUT = 5.0
# Shorter than this, the metrics token can be guessed by whoever reaches /status or /metrics.
METRICS_TOKEN_MIN_LENGTH = 24
TAG = "memora"


def _redis_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.CACHES["default"]["LOCATION"],
        socket_timeout=REDIS_CHECK_TIMEOUT,
        socket_connect_timeout=REDIS_CHECK_TIMEOUT,
    )


def proxy_flag_set(client: redis.Redis) -> bool:
    """True when requests evidently arrive through a proxy that is not trusted: the request path
    raises ``<prefix>:proxyflag`` in Redis when a private or loopback peer sends X-Forwarded-For
    while ``MEMORA_TRUSTED_PROXIES`` is empty."""
    return bool(client.exists(clientip.proxy_flag_key()))


@register(TAG, Tags.security, deploy=True)
def check_debug(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not settings.DEBUG:
        return []
    return [
        Error(
            "DJANGO_DEBUG is on.",
            hint="Debug mode shows settings and tracebacks to any client and lets DJANGO_SECRET_KEY default to "
            "a published value. Unset DJANGO_DEBUG (or set it to 0) in production.",
            id="memora.E001",
        )
    ]


@register(TAG, Tags.security, deploy=True)
def check_metrics_token(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    token = settings.MEMORA_METRICS_TOKEN
    if not token:
        return [
            Warning(
                "MEMORA_METRICS_TOKEN is not set: /status and /metrics answer 401 to everyone.",
                hint="Set it to a long random value (python -c 'import secrets; print(secrets.token_urlsafe(32))') "
                "and give it to the monitoring system.",
                id="memora.W001",
            )
        ]
    if len(token) < METRICS_TOKEN_MIN_LENGTH:
        return [
            Warning(
                f"MEMORA_METRICS_TOKEN is shorter than {METRICS_TOKEN_MIN_LENGTH} characters.",
                hint="Use a long random value: the token is all that guards /status and /metrics.",
                id="memora.W002",
            )
        ]
    return []


@register(TAG, Tags.security, deploy=True)
def check_trusted_proxies(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    proxies = [p.strip() for p in settings.MEMORA_TRUSTED_PROXIES if p.strip()]
    for proxy in proxies:
        try:
            network = ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            messages.append(
                Error(
                    f"MEMORA_TRUSTED_PROXIES: {proxy!r} is not an address or network.",
                    hint="List the reverse proxies' addresses or networks, comma-separated (10.0.0.5,10.1.0.0/24).",
                    id="memora.E002",
                )
            )
            continue
        if network.prefixlen == 0:
            messages.append(
                Error(
                    f"MEMORA_TRUSTED_PROXIES: {proxy!r} trusts every address.",
                    hint="Any client could then choose its own IP with X-Forwarded-For and escape the per-address "
                    "rate limits. List only the reverse proxies.",
                    id="memora.E003",
                )
            )
    if proxies:
        return messages
    try:
        flagged = proxy_flag_set(_redis_client())
    except (redis.RedisError, OSError):
        flagged = False  # check_redis says that Redis cannot be read
    if flagged:
        messages.append(
            Warning(
                "Requests arrive through a proxy (a private or loopback peer sent X-Forwarded-For) but "
                "MEMORA_TRUSTED_PROXIES is empty: every client shares the proxy's address, so one student's "
                "failed logins or registrations rate-limit all of them.",
                hint="Set MEMORA_TRUSTED_PROXIES to the reverse proxies' addresses or networks.",
                id="memora.W003",
            )
        )
    return messages


@register(TAG, Tags.caches, deploy=True)
def check_redis(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Redis holds unflushed awards and live sessions: it must neither evict nor forget them."""
    location = settings.CACHES["default"]["LOCATION"]
    client = _redis_client()
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return [
            Warning(
                f"Redis at {_safe(location)} could not be reached ({exc}); its eviction policy and persistence "
                "were not checked.",
                hint="Run the check again once Redis is up, from a host that reaches it.",
                id="memora.W010",
            )
        ]
    try:
        policy = str(client.config_get("maxmemory-policy").get("maxmemory-policy") or "")
        save = str(client.config_get("save").get("save") or "")
        aof = bool(int(client.info("persistence").get("aof_enabled", 0)))
    except redis.ResponseError as exc:
        return [
            Warning(
                f"Redis at {_safe(location)} refused CONFIG GET ({exc}); its eviction policy and persistence "
                "were not checked.",
                hint="A managed Redis may rename CONFIG: check in its console that maxmemory-policy is noeviction "
                "and that AOF is on.",
                id="memora.W011",
            )
        ]
    except (redis.RedisError, OSError) as exc:
        return [Warning(f"Redis at {_safe(location)} stopped answering ({exc}).", id="memora.W010")]
    finally:
        client.close()
    messages: list[CheckMessage] = []
    if policy != "noeviction":
        messages.append(
            Warning(
                f"Redis maxmemory-policy is {policy!r}: when memory runs out it drops keys, unflushed awards "
                "and live sessions among them.",
                hint="Set maxmemory-policy noeviction (a full Redis then refuses writes and the service falls back "
                "to the database).",
                id="memora.W012",
            )
        )
    if not aof and not save.strip():
        messages.append(
            Warning(
                "Redis has no persistence (neither AOF nor RDB snapshots): a restart loses every award not yet "
                "flushed to the database.",
                hint="appendonly yes, appendfsync everysec (awards acknowledged more than 2 s before a crash survive).",
                id="memora.W013",
            )
        )
    elif not aof:
        messages.append(
            Warning(
                "Redis persists by RDB snapshots only: a restart loses the awards since the last snapshot.",
                hint="appendonly yes, appendfsync everysec (awards acknowledged more than 2 s before a crash survive).",
                id="memora.W014",
            )
        )
    return messages


def _safe(url: str) -> str:
    """The URL without its password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
