"""Atomic fixed-window rate limits in Redis, with a per-process fallback for when Redis is away.

One Lua call counts and reads the TTL, so a counter never lives without its expiry.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings

from memora_project import hotstate

# Returns {count, ttl_ms}. INCR and PEXPIRE in one step: no counter without an expiry.
HIT_LUA = """
local n = redis.call('INCRBY', KEYS[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""
_hit = hotstate.LuaScript(HIT_LUA)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    count: int
    retry_after: float


def _key(scope: str, key: str) -> str:
    return f"{settings.MEMORA_REDIS_KEY_PREFIX}:rl:{scope}:{key}"


class LocalLimiter:
    """Per-process fixed windows: the fallback for scopes the design allows to weaken."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, name: str, limit: int, window: int, amount: int = 1) -> Verdict:
        now = time.monotonic()
        with self._lock:
            if len(self._windows) > 100_000:
                self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
            ends, count = self._windows.get(name, (0.0, 0))
            if ends <= now:
                ends, count = now + window, 0
            count += amount
            self._windows[name] = (ends, count)
        return Verdict(count <= limit, count, max(ends - now, 0.0))

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()


local = LocalLimiter()


def hit(scope: str, key: str, *, limit: int, window: int, amount: int = 1) -> Verdict:
    """Count one event for (scope, key); falls back to this process's memory when Redis is away."""
    name = _key(scope, key)
    try:
        count, ttl_ms = hotstate.call(lambda r: _hit(r, [name], [window * 1000, amount]))
    except hotstate.RedisUnavailable:
        return local.hit(name, limit, window, amount)
    return Verdict(int(count) <= limit, int(count), int(ttl_ms) / 1000.0)


def hit_or_raise(name: str, window: int) -> int:
    """Count one event under the full key ``name``; raises RedisUnavailable (no fallback)."""
    count, _ttl = hotstate.call(lambda r: _hit(r, [name], [window * 1000, 1]))
    return int(count)
