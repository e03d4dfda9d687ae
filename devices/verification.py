"""The device + session check that every student request passes.

Warm cache: one Lua call, no database query. Cold cache (the student's hash is missing): the
database answers and the hash is rebuilt. Redis away: the database answers, idle and lifetime
included. Outcomes follow the design's order: device id format, token known, session state
(revoked > replaced > ended > expired), device binding.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from core import hotstate, metrics, ratelimit
from core.clientip import client_address
from core.errors import ApiError, not_authenticated, rate_limited
from core.localcache import ExpiringSet
from devices import cache, services, tokens
from devices.models import PlayerSession
from players.principals import PlayerPrincipal

logger = logging.getLogger(__name__)

_MESSAGES = {
    "session_replaced": "You were signed in on another device.",
    "device_revoked": "This device was removed from your account.",
    "logout": "You signed out. Please sign in again.",
    "password_changed": "Your password was changed. Please sign in again.",
    "deactivated": "Your account was deactivated.",
    "ended_by_support": "Your session was ended by support. Please sign in again.",
}


def invalid_device_id() -> ApiError:
    return ApiError("invalid_device_id", "X-Device-ID must be a UUID version 4.", status=400)


def _ended(code: str, reason: str) -> ApiError:
    if code == "session_replaced":
        return ApiError(code, _MESSAGES[code], status=401)
    if code == "device_revoked":
        return ApiError(code, _MESSAGES[code], status=401)
    return ApiError(
        "session_ended", _MESSAGES.get(reason, "Your session ended. Please sign in again."), status=401, reason=reason
    )


def _expired(reason: str) -> ApiError:
    return ApiError("session_expired", "Your session expired. Please sign in again.", status=401, reason=reason)


def _mismatch() -> ApiError:
    return ApiError("device_mismatch", "This session belongs to another device.", status=403)


def _from_epoch(value: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)


def verify(*, authorization: str | None, device_header: str | None) -> PlayerPrincipal:
    """The verified student, or an ApiError with the design's code."""
    device_id = tokens.device_id_normalize(device_header)
    if device_id is None:
        raise invalid_device_id()
    if not authorization or not authorization.startswith("Bearer "):
        raise not_authenticated()
    parsed = tokens.token_parse(authorization[7:].strip())
    if parsed is None:
        raise not_authenticated()
    now = time.time()
    if parsed.player_id in cache.stale_players:
        return verify_database(
            player_id=parsed.player_id, token_digest=parsed.digest, device_id=device_id, rebuild=True
        )
    try:
        result = cache.check(
            player_id=parsed.player_id,
            token_digest=parsed.digest,
            device_id=device_id,
            now=now,
            idle=settings.MEMORA_SESSION_IDLE_TIMEOUT,
            write_interval=settings.MEMORA_LAST_SEEN_WRITE_INTERVAL,
        )
    except hotstate.RedisUnavailable:
        if parsed.digest in _local_unknown:
            raise not_authenticated() from None
        try:
            return verify_database(player_id=parsed.player_id, token_digest=parsed.digest, device_id=device_id)
        except ApiError as error:
            if error.code == "not_authenticated":
                _local_unknown.add(parsed.digest)
            raise
    status = result[0]
    if status != "miss":
        metrics.VERIFY_CACHE.inc()
    if status == "ok":
        sid, started, expires, seen, dname, plat, tz, tzp, tze, uid = result[1:11]
        return PlayerPrincipal(
            player_id=parsed.player_id,
            user_id=int(uid),
            device_id=device_id,
            session_id=int(sid),
            token_digest=parsed.digest,
            started_at=_from_epoch(started),
            expires_at=_from_epoch(expires),
            last_seen_at=_from_epoch(seen),
            device_name=dname,
            platform=plat,
            timezone=tz,
            timezone_pending=tzp,
            timezone_effective_at=_from_epoch(tze) if tze else None,
            path="cache",
        )
    if status == "ended":
        code, _, reason = result[1].partition("|")
        raise _ended(code, reason)
    if status == "expired":
        raise _expired(result[1])
    if status == "mismatch":
        raise _mismatch()
    if status == "unknown":
        raise not_authenticated()
    # A cold cache: the database answers, then the student's copy is rebuilt for the next request.
    try:
        return verify_database(
            player_id=parsed.player_id, token_digest=parsed.digest, device_id=device_id, rebuild=True
        )
    except ApiError as error:
        if error.code == "not_authenticated":
            # A student who does not exist has no copy to rebuild: remember the digest instead.
            with contextlib.suppress(hotstate.RedisUnavailable):
                cache.remember_unknown(player_id=parsed.player_id, token_digest=parsed.digest)
        raise


# Unknown token digests remembered by this process while Redis is away (statement 14).
_local_unknown = ExpiringSet(ttl=cache.UNKNOWN_TTL)


def unknown_credentials(request: HttpRequest) -> ApiError:
    """The answer to credentials nobody knows (statement 14): 401, or 429 once this address (/64)
    sent more than MEMORA_RATE_UNKNOWN_CREDENTIALS of them in the window."""
    limit, window = settings.MEMORA_RATE_UNKNOWN_CREDENTIALS
    verdict = ratelimit.hit("unknown_credentials", client_address(request), limit=limit, window=window)
    if not verdict.allowed:
        return rate_limited(verdict.retry_after, scope="unknown_credentials")
    return not_authenticated()


def verify_database(*, player_id: int, token_digest: str, device_id: str, rebuild: bool = False) -> PlayerPrincipal:
    metrics.VERIFY_DATABASE.inc()
    session = (
        PlayerSession.objects.select_related("device", "player")
        .filter(token_digest=token_digest, player_id=player_id)
        .first()
    )
    if rebuild:
        services.auth_cache_sync(player_id=player_id)
    if session is None:
        raise not_authenticated()
    now = timezone.now()
    if session.device.revoked_at is not None:
        raise _ended("device_revoked", "")
    if session.ended_at is not None:
        code = "session_replaced" if session.end_reason == "replaced" else "session_ended"
        if session.end_reason == "device_revoked":
            code = "device_revoked"
        raise _ended(code, session.end_reason)
    if now >= session.expires_at:
        raise _expired("lifetime")
    if (now - session.last_seen_at).total_seconds() >= settings.MEMORA_SESSION_IDLE_TIMEOUT:
        raise _expired("idle")
    if str(session.device.device_id) != device_id:
        raise _mismatch()
    if (now - session.last_seen_at).total_seconds() >= settings.MEMORA_LAST_SEEN_WRITE_INTERVAL:
        PlayerSession.objects.filter(pk=session.pk).update(last_seen_at=now)
        session.device.__class__.objects.filter(pk=session.device.pk).update(last_seen_at=now)
        session.last_seen_at = now
    profile = session.player
    return PlayerPrincipal(
        player_id=player_id,
        user_id=profile.user_id,
        device_id=device_id,
        session_id=session.pk,
        token_digest=token_digest,
        started_at=session.started_at,
        expires_at=session.expires_at,
        last_seen_at=session.last_seen_at,
        device_name=session.device.name,
        platform=session.device.platform,
        timezone=profile.timezone,
        timezone_pending=profile.timezone_pending,
        timezone_effective_at=profile.timezone_effective_at,
        path="database",
    )
