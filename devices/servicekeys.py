"""Service API keys: created in the admin, stored as a SHA-256 digest, cached in Redis by digest.

The per-key rate limit (100/s) counts in the same Lua call that reads the cached key, so a
service call costs one round trip on a warm cache.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from core import hotstate, ratelimit
from core.errors import rate_limited
from core.localcache import ExpiringSet
from core.redisconn import IDENTITY
from devices import tokens
from devices.models import ServiceApiKey
from players.principals import ServicePrincipal

CACHE_TTL = 300
# An unknown key's digest is remembered this long (statement 14): a repeat costs no query.
NEGATIVE_TTL = 60
# A revoked key's tombstone outlives any cached copy by far (statement 16): no cache fill, however
# late, brings the key back.
TOMBSTONE_TTL = 7 * 24 * 3600
_UNKNOWN = "-"

_lookup = hotstate.LuaScript.load(__file__, "servicekey_lookup", args=("window_ms", "identity"), fragments=("window",))
_fill = hotstate.LuaScript.load(__file__, "servicekey_fill", args=("value", "ttl", "identity"))
_bury = hotstate.LuaScript.load(__file__, "servicekey_bury", args=("ttl",))

# Unknown digests remembered by this process while Redis is away.
_local_unknown = ExpiringSet(ttl=NEGATIVE_TTL)


def _cache_key(digest: str) -> str:
    return f"{settings.MEMORA_REDIS_KEY_PREFIX}:{{svc:{digest[:8]}}}:key:{digest}"


def _rate_key(digest: str) -> str:
    return f"{settings.MEMORA_REDIS_KEY_PREFIX}:{{svc:{digest[:8]}}}:rl:{digest}"


def _tomb_key(digest: str) -> str:
    return f"{settings.MEMORA_REDIS_KEY_PREFIX}:{{svc:{digest[:8]}}}:tomb:{digest}"


def _bury_digest(digest: str) -> None:
    """Raises RedisUnavailable."""
    hotstate.call(lambda r: _bury(r, [_cache_key(digest), _tomb_key(digest)], _bury.argv({"ttl": TOMBSTONE_TTL})))


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

    def bury() -> None:
        # If Redis is away, the recovery listener buries every recently revoked key when it answers.
        with contextlib.suppress(hotstate.RedisUnavailable):
            _bury_digest(digest)

    transaction.on_commit(bury)


def service_key_tombstones_restore() -> int:
    """Bury every key revoked within the tombstone's lifetime (Redis answered again: a revocation
    made while it was away, or a Redis back from an old copy, must not let a revoked key work)."""
    since = timezone.now() - dt.timedelta(seconds=TOMBSTONE_TTL)
    digests = list(ServiceApiKey.objects.filter(revoked_at__gte=since).values_list("digest", flat=True))
    for digest in digests:
        _bury_digest(digest)
    return len(digests)


def on_redis_recovery() -> None:
    service_key_tombstones_restore()


def _from_db(digest: str) -> ServicePrincipal | None:
    key = ServiceApiKey.objects.filter(digest=digest, revoked_at__isnull=True).first()
    if key is None:
        return None
    return ServicePrincipal(key_id=key.pk, name=key.name, scopes=frozenset(key.scopes))


def _fill_cache(digest: str, value: str, ttl: int) -> None:
    with contextlib.suppress(hotstate.RedisUnavailable):
        hotstate.call(
            lambda r: _fill(
                r,
                [_cache_key(digest), _tomb_key(digest)],
                _fill.argv({"value": value, "ttl": ttl, "identity": IDENTITY}),
            )
        )


def service_key_verify(*, raw: str) -> ServicePrincipal | None:
    if not tokens.service_key_valid_shape(raw):
        return None
    digest = tokens.digest(raw)
    limit, window = settings.MEMORA_RATE_SERVICE_KEY
    try:
        result = hotstate.call(
            lambda r: _lookup(
                r,
                [_cache_key(digest), _rate_key(digest), _tomb_key(digest)],
                _lookup.argv({"window_ms": window * 1000, "identity": IDENTITY}),
            )
        )
    except hotstate.RedisUnavailable:
        if digest in _local_unknown:
            return None
        principal = _from_db(digest)
        if principal is None:
            _local_unknown.add(digest)
            return None
        verdict = ratelimit.local.hit(f"svc:{principal.key_id}", limit, window)
        if not verdict.allowed:
            raise rate_limited(verdict.retry_after, scope="service_key") from None
        return principal
    status = result[0].decode() if isinstance(result[0], bytes) else result[0]
    if status in ("revoked", "unknown"):
        return None
    if status == "hit":
        data = json.loads(result[1])
        principal = ServicePrincipal(key_id=data["id"], name=data["name"], scopes=frozenset(data["scopes"]))
        count, ttl_ms = result[2], result[3]
    else:
        found = _from_db(digest)
        if found is None:
            _fill_cache(digest, _UNKNOWN, NEGATIVE_TTL)
            return None
        principal = found
        payload = json.dumps({"id": principal.key_id, "name": principal.name, "scopes": sorted(principal.scopes)})
        _fill_cache(digest, payload, CACHE_TTL)
        count, ttl_ms = result[1], result[2]
    if int(count) > limit:
        raise rate_limited(int(ttl_ms) / 1000.0, scope="service_key")
    return principal
