"""Service API keys: created in the admin, stored as a SHA-256 digest, cached in Redis by digest.

The per-key rate limit (100/s) counts in the same Lua call that reads the cached key, so a
service call costs one round trip on a warm cache.
"""

from __future__ import annotations

import contextlib
import json

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from devices import tokens
from devices.models import ServiceApiKey
from memora_project import hotstate, ratelimit
from memora_project.errors import rate_limited
from players.principals import ServicePrincipal

CACHE_TTL = 300

# KEYS: cached key, rate counter. ARGV: window ms. Returns {cached or false, count, ttl_ms}.
LOOKUP_LUA = """
local v = redis.call('GET', KEYS[1])
local n = redis.call('INCR', KEYS[2])
local ttl = redis.call('PTTL', KEYS[2])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {v or false, n, ttl}
"""
_lookup = hotstate.LuaScript(LOOKUP_LUA)


def _cache_key(digest: str) -> str:
    return f"{settings.MEMORA_REDIS_KEY_PREFIX}:{{svc:{digest[:8]}}}:key:{digest}"


def _rate_key(digest: str) -> str:
    return f"{settings.MEMORA_REDIS_KEY_PREFIX}:{{svc:{digest[:8]}}}:rl:{digest}"


@transaction.atomic
def service_key_create(*, name: str, scopes: list[str], actor: User | None) -> tuple[ServiceApiKey, str]:
    """A new key; the plain key is returned once and never stored."""
    raw, prefix = tokens.service_key_new()
    key = ServiceApiKey.objects.create(
        name=name, prefix=prefix, digest=tokens.digest(raw), scopes=sorted(set(scopes)), created_by=actor
    )
    return key, raw


def service_key_revoke(*, key_pk: int) -> None:
    key = ServiceApiKey.objects.get(pk=key_pk)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    digest = key.digest

    def forget() -> None:
        # If Redis is away, the cached copy expires within CACHE_TTL.
        with contextlib.suppress(hotstate.RedisUnavailable):
            hotstate.call(lambda r: r.delete(_cache_key(digest)))

    transaction.on_commit(forget)


def _from_db(digest: str) -> ServicePrincipal | None:
    key = ServiceApiKey.objects.filter(digest=digest, revoked_at__isnull=True).first()
    if key is None:
        return None
    return ServicePrincipal(key_id=key.pk, name=key.name, scopes=frozenset(key.scopes))


def service_key_verify(*, raw: str) -> ServicePrincipal | None:
    if not tokens.service_key_valid_shape(raw):
        return None
    digest = tokens.digest(raw)
    limit, window = settings.MEMORA_RATE_SERVICE_KEY
    try:
        cached, count, ttl_ms = hotstate.call(
            lambda r: _lookup(r, [_cache_key(digest), _rate_key(digest)], [window * 1000])
        )
    except hotstate.RedisUnavailable:
        principal = _from_db(digest)
        if principal is not None:
            verdict = ratelimit.local.hit(f"svc:{principal.key_id}", limit, window)
            if not verdict.allowed:
                raise rate_limited(verdict.retry_after, scope="service_key") from None
        return principal
    if cached:
        data = json.loads(cached)
        principal = ServicePrincipal(key_id=data["id"], name=data["name"], scopes=frozenset(data["scopes"]))
    else:
        principal = _from_db(digest)
        if principal is None:
            return None
        payload = json.dumps({"id": principal.key_id, "name": principal.name, "scopes": sorted(principal.scopes)})
        with contextlib.suppress(hotstate.RedisUnavailable):
            hotstate.call(lambda r: r.set(_cache_key(digest), payload, ex=CACHE_TTL))
    if int(count) > limit:
        raise rate_limited(int(ttl_ms) / 1000.0, scope="service_key")
    return principal
