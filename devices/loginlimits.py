"""Login rate limits and lockouts (DESIGN, "Rate limits").

- attempts per IP: 600 / 10 min (per-process memory while Redis is away);
- failures per (username, IP): 10 / 15 min, then locked 15 min;
- failures per username from any IP: 100 / hour, then locked until the hour passes.
Failures are counted in Redis, or as rows in the database while Redis is away. A lock refuses the
right password too, and says nothing about whether the username exists.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from django.conf import settings
from django.utils import timezone

from devices.models import LoginFailure
from memora_project import hotstate, ratelimit
from memora_project.errors import rate_limited

# KEYS: (username, IP) lock, username failure counter. ARGV: username limit.
# Returns the milliseconds left on the longest lock, 0 when not locked.
LOCKED_LUA = """
local wait = 0
local t = redis.call('PTTL', KEYS[1])
if t > 0 then wait = t end
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
if n >= tonumber(ARGV[1]) then
  local t2 = redis.call('PTTL', KEYS[2])
  if t2 > wait then wait = t2 end
end
return wait
"""
_locked = hotstate.LuaScript(LOCKED_LUA)


def username_key(username: str) -> str:
    return hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]


def _names(user_key: str, ip: str) -> tuple[str, str, str]:
    prefix = settings.MEMORA_REDIS_KEY_PREFIX
    return (
        f"{prefix}:rl:lock_user_ip:{user_key}:{ip}",
        f"{prefix}:rl:fail_user_ip:{user_key}:{ip}",
        f"{prefix}:rl:fail_user:{user_key}",
    )


def login_ip_check(*, ip: str) -> None:
    limit, window = settings.MEMORA_RATE_LOGIN_IP
    verdict = ratelimit.hit("login_ip", ip, limit=limit, window=window)
    if not verdict.allowed:
        raise rate_limited(verdict.retry_after, scope="login_ip")


def login_lock_check(*, user_key: str, ip: str) -> None:
    lock, _, fail_user = _names(user_key, ip)
    user_limit, _ = settings.MEMORA_RATE_LOGIN_FAILURES_USER
    try:
        wait_ms = hotstate.call(lambda r: _locked(r, [lock, fail_user], [user_limit]))
    except hotstate.RedisUnavailable:
        wait = _database_lock_wait(user_key=user_key, ip=ip)
    else:
        wait = int(wait_ms) / 1000.0
    if wait > 0:
        raise rate_limited(wait, scope="login_lockout")


def _database_lock_wait(*, user_key: str, ip: str) -> float:
    now = timezone.now()
    ip_limit, ip_window = settings.MEMORA_RATE_LOGIN_FAILURES_USER_IP
    user_limit, user_window = settings.MEMORA_RATE_LOGIN_FAILURES_USER
    wait = 0.0
    recent = list(
        LoginFailure.objects.filter(
            username_key=user_key,
            ip=ip,
            at__gt=now - dt.timedelta(seconds=ip_window + settings.MEMORA_LOGIN_LOCK_SECONDS),
        )
        .order_by("-at")
        .values_list("at", flat=True)[:ip_limit]
    )
    if len(recent) >= ip_limit and recent[0] - recent[-1] <= dt.timedelta(seconds=ip_window):
        # Locked from the failure that reached the limit.
        wait = max(wait, (recent[0] + dt.timedelta(seconds=settings.MEMORA_LOGIN_LOCK_SECONDS) - now).total_seconds())
    window_start = now - dt.timedelta(seconds=user_window)
    in_hour = list(
        LoginFailure.objects.filter(username_key=user_key, at__gt=window_start)
        .order_by("at")
        .values_list("at", flat=True)[:user_limit]
    )
    if len(in_hour) >= user_limit:
        wait = max(wait, (in_hour[0] + dt.timedelta(seconds=user_window) - now).total_seconds())
    return wait


def login_failure_record(*, user_key: str, ip: str) -> None:
    lock, fail_user_ip, fail_user = _names(user_key, ip)
    ip_limit, ip_window = settings.MEMORA_RATE_LOGIN_FAILURES_USER_IP
    _, user_window = settings.MEMORA_RATE_LOGIN_FAILURES_USER
    try:
        per_ip = ratelimit.hit_or_raise(fail_user_ip, ip_window)
        ratelimit.hit_or_raise(fail_user, user_window)
        if per_ip >= ip_limit:
            hotstate.call(lambda r: r.set(lock, 1, ex=settings.MEMORA_LOGIN_LOCK_SECONDS))
    except hotstate.RedisUnavailable:
        LoginFailure.objects.create(username_key=user_key, ip=ip, at=timezone.now())


def login_success_record(*, user_key: str, ip: str) -> None:
    """The right password clears this address's failures for the username, in whichever store
    counts them now (as the Redis path always did)."""
    _, fail_user_ip, _ = _names(user_key, ip)
    try:
        hotstate.call(lambda r: r.delete(fail_user_ip))
    except hotstate.RedisUnavailable:
        LoginFailure.objects.filter(username_key=user_key, ip=ip).delete()
