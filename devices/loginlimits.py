"""Login rate limits and lockouts (DESIGN, "Rate limits" and security statements 11-12).

- attempts per address (/64 for IPv6): 600 / 10 min (per-process memory while Redis is away);
- failures per (username, address): 10 / 15 min, then locked 15 min;
- failures per username from anywhere: 100 / hour, then locked until the hour passes;
- failures per (username, device) of a login that proves its device (the API's device proof, the
  admin's signed staff device cookie): 10 / 15 min, then that device alone is locked 15 min. Such
  a login is held only to its own lock; its failures still count toward the username's.

Failures are counted in Redis, or as rows in the database while Redis is away. A lock refuses the
right password too, and says nothing about whether the username exists. The API login and the
admin login (``devices.adminlogin``) go through the same functions.

Every key of one username shares the hash tag ``{u:<username digest>}``, so each script touches
one Redis Cluster slot, and the username's keys are listed in one set so support can clear them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from core import hotstate, ratelimit
from core.errors import rate_limited
from devices.models import LoginFailure

_locked = hotstate.LuaScript.load(__file__, "login_locked", args=("user_limit",))
_failure = hotstate.LuaScript.load(
    __file__,
    "login_failure",
    args=("limit", "window_ms", "lock_ms", "user_window_ms", "set_ttl_ms"),
    fragments=("window",),
)


@dataclass(frozen=True)
class Scope:
    """Who a login attempt is counted as: an address, or a device that proved itself."""

    user_key: str
    address: str
    device_id: str | None = None  # set only when the login proved this device

    @property
    def proven(self) -> bool:
        return self.device_id is not None


def username_key(username: str) -> str:
    # surrogatepass: the gate runs before the body's validation refuses a lone surrogate (400).
    return hashlib.sha256(username.strip().lower().encode(errors="surrogatepass")).hexdigest()[:32]


def _base(user_key: str) -> str:
    return f"{settings.MEMORA_REDIS_KEY_PREFIX}:rl:{{u:{user_key}}}"


def _names(scope: Scope) -> tuple[str, str, str, str]:
    """(lock, failure counter) of the scope, the username's counter, the username's key set."""
    base = _base(scope.user_key)
    part = f"dev:{scope.device_id}" if scope.proven else f"ip:{scope.address}"
    return f"{base}:lock_{part}", f"{base}:fail_{part}", f"{base}:fail", f"{base}:keys"


def _limits(scope: Scope) -> tuple[int, int]:
    if scope.proven:
        return settings.MEMORA_RATE_LOGIN_FAILURES_USER_DEVICE  # type: ignore[no-any-return]
    return settings.MEMORA_RATE_LOGIN_FAILURES_USER_IP  # type: ignore[no-any-return]


def login_ip_allowed(*, ip: str) -> ratelimit.Verdict:
    """Count one attempt from this address (the caller decides: a proven device is exempt)."""
    limit, window = settings.MEMORA_RATE_LOGIN_IP
    return ratelimit.hit("login_ip", ip, limit=limit, window=window)


def login_ip_check(*, ip: str) -> None:
    verdict = login_ip_allowed(ip=ip)
    if not verdict.allowed:
        raise rate_limited(verdict.retry_after, scope="login_ip")


def _lock_queue(client: Any, scope: Scope) -> Any:
    lock, fail, fail_user, _ = _names(scope)
    # A proven device is stopped only by its own lock, never by the username's.
    user_limit = 0 if scope.proven else settings.MEMORA_RATE_LOGIN_FAILURES_USER[0]
    return _locked(client, [lock, fail_user, fail], _locked.argv({"user_limit": user_limit}))


def login_lock_wait(scope: Scope) -> float:
    """Seconds left on the lock that applies to this attempt; 0 when none does."""
    try:
        wait_ms, _ = hotstate.call(lambda r: _lock_queue(r, scope))
    except hotstate.RedisUnavailable:
        return _database_lock_wait(scope)
    return int(wait_ms) / 1000.0


@dataclass(frozen=True)
class Gate:
    """What stands before a login's password check, read in one Redis round trip."""

    attempts: ratelimit.Verdict  # this address's attempt, counted
    lock_wait: float  # seconds left on the lock that applies, 0 when none does
    failures: bool  # the scope has failures that a right password clears (True while Redis is away)


def login_gate(*, ip: str, scope: Scope) -> Gate:
    """Count the address's attempt and read the scope's locks in one pipeline (two slots in a
    Cluster: the client sends each script to its node)."""
    limit, window = settings.MEMORA_RATE_LOGIN_IP

    def run(r: Any) -> list[Any]:
        pipe = r.pipeline(transaction=False)
        ratelimit.hit_queue(pipe, "login_ip", ip, window=window)
        _lock_queue(pipe, scope)
        return pipe.execute()  # type: ignore[no-any-return]

    try:
        hit, (wait_ms, failures) = hotstate.call(run)
    except hotstate.RedisUnavailable:
        attempts = ratelimit.hit_local("login_ip", ip, limit=limit, window=window)
        return Gate(attempts=attempts, lock_wait=_database_lock_wait(scope), failures=True)
    return Gate(
        attempts=ratelimit.hit_verdict(hit, limit=limit), lock_wait=int(wait_ms) / 1000.0, failures=bool(failures)
    )


def login_lock_check(scope: Scope) -> None:
    wait = login_lock_wait(scope)
    if wait > 0:
        raise rate_limited(wait, scope="login_lockout")


def _locked_since(times: list[dt.datetime], limit: int, window: int) -> dt.datetime | None:
    """The failure that reached the limit within one window (newest first), if one did."""
    if len(times) >= limit and times[0] - times[limit - 1] <= dt.timedelta(seconds=window):
        return times[0]
    return None


def _database_lock_wait(scope: Scope) -> float:
    now = timezone.now()
    lock = dt.timedelta(seconds=settings.MEMORA_LOGIN_LOCK_SECONDS)
    limit, window = _limits(scope)
    rows = LoginFailure.objects.filter(username_key=scope.user_key)
    if scope.proven:
        mine = rows.filter(device_id=scope.device_id)
    else:
        mine = rows.filter(ip=scope.address, device_id__isnull=True)
    recent = list(
        mine.filter(at__gt=now - dt.timedelta(seconds=window) - lock)
        .order_by("-at")
        .values_list("at", flat=True)[:limit]
    )
    wait = 0.0
    since = _locked_since(recent, limit, window)
    if since is not None:
        wait = max(wait, (since + lock - now).total_seconds())
    if scope.proven:
        return wait
    user_limit, user_window = settings.MEMORA_RATE_LOGIN_FAILURES_USER
    window_start = now - dt.timedelta(seconds=user_window)
    in_hour = list(rows.filter(at__gt=window_start).order_by("at").values_list("at", flat=True)[:user_limit])
    if len(in_hour) >= user_limit:
        wait = max(wait, (in_hour[0] + dt.timedelta(seconds=user_window) - now).total_seconds())
    return wait


def login_failure_record(scope: Scope) -> None:
    lock, fail, fail_user, index = _names(scope)
    limit, window = _limits(scope)
    _, user_window = settings.MEMORA_RATE_LOGIN_FAILURES_USER
    lock_seconds = settings.MEMORA_LOGIN_LOCK_SECONDS
    keep = max(window + lock_seconds, user_window)
    args = _failure.argv(
        {
            "limit": limit,
            "window_ms": window * 1000,
            "lock_ms": lock_seconds * 1000,
            "user_window_ms": user_window * 1000,
            "set_ttl_ms": keep * 1000,
        }
    )
    try:
        hotstate.call(lambda r: _failure(r, [fail, lock, fail_user, index], args))
    except hotstate.RedisUnavailable:
        LoginFailure.objects.create(
            username_key=scope.user_key, ip=scope.address, device_id=scope.device_id, at=timezone.now()
        )


def login_success_record(scope: Scope, *, failures: bool = True) -> None:
    """The right password clears this scope's failures for the username, in whichever store
    counts them now (``failures`` False: the gate saw none in Redis, nothing to clear)."""
    if not failures:
        return
    _, fail, _, _ = _names(scope)
    try:
        hotstate.call(lambda r: r.delete(fail))
    except hotstate.RedisUnavailable:
        rows = LoginFailure.objects.filter(username_key=scope.user_key)
        if scope.proven:
            rows.filter(device_id=scope.device_id).delete()
        else:
            rows.filter(ip=scope.address, device_id__isnull=True).delete()


def login_locks_clear(*, username: str) -> int:
    """Lift every lock and forget every failure of the username, in Redis and in the database.

    Returns how many counters and locks were removed. Raises RedisUnavailable if Redis is away
    (its locks would still stand: support tries again).
    """
    user_key = username_key(username)
    base = _base(user_key)
    index = f"{base}:keys"

    def clear(r: object) -> int:
        members = [m.decode() if isinstance(m, bytes) else m for m in r.smembers(index)]  # type: ignore[attr-defined]
        # One slot (the tag): one DEL for them all.
        return int(r.delete(index, f"{base}:fail", *members))  # type: ignore[attr-defined]

    removed = hotstate.call(clear)
    removed += LoginFailure.objects.filter(username_key=user_key).delete()[0]
    return removed


def login_lock_status(*, username: str) -> float:
    """Seconds left on the username's own lock (the one a new device meets), for support."""
    return login_lock_wait(Scope(user_key=username_key(username), address="0.0.0.0"))  # noqa: S104


__all__ = [
    "Gate",
    "Scope",
    "login_failure_record",
    "login_gate",
    "login_ip_allowed",
    "login_ip_check",
    "login_lock_check",
    "login_lock_status",
    "login_lock_wait",
    "login_locks_clear",
    "login_success_record",
    "username_key",
]
