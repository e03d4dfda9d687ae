"""Atomic fixed-window rate limits in Redis, with a per-process fallback for when Redis is away.

One Lua call counts and reads the TTL, so a counter never lives without its expiry.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from core import hotstate

_hit = hotstate.LuaScript.load(__file__, "hit", args=("window_ms", "amount"), fragments=("window",))


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
    try:
        raw = hotstate.call(lambda r: hit_queue(r, scope, key, window=window, amount=amount))
    except hotstate.RedisUnavailable:
        return hit_local(scope, key, limit=limit, window=window, amount=amount)
    return hit_verdict(raw, limit=limit)


def hit_queue(client: Any, scope: str, key: str, *, window: int, amount: int = 1) -> Any:
    """Send the count of one event on ``client`` (a pipeline: the caller's other commands share its
    round trip); :func:`hit_verdict` reads its reply."""
    return _hit(client, [_key(scope, key)], _hit.argv({"window_ms": window * 1000, "amount": amount}))


def hit_verdict(raw: Any, *, limit: int) -> Verdict:
    count, ttl_ms = raw
    return Verdict(int(count) <= limit, int(count), int(ttl_ms) / 1000.0)


def hit_local(scope: str, key: str, *, limit: int, window: int, amount: int = 1) -> Verdict:
    """The per-process count, while Redis is away."""
    return local.hit(_key(scope, key), limit, window, amount)


def hit_or_raise(name: str, window: int) -> int:
    """Count one event under the full key ``name``; raises RedisUnavailable (no fallback)."""
    count, _ttl = hotstate.call(lambda r: _hit(r, [name], _hit.argv({"window_ms": window * 1000, "amount": 1})))
    return int(count)
