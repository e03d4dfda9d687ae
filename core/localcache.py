"""Per-process memory of short-lived facts, for when Redis is away."""

from __future__ import annotations

import threading
import time


class ExpiringSet:
    """Members remembered for ``ttl`` seconds, at most ``max_size`` of them (the expired ones are
    dropped first, then everything: forgetting only costs a database query)."""

    def __init__(self, *, ttl: float, max_size: int = 100_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def __contains__(self, member: str) -> bool:
        expiry = self._expiry.get(member)
        return expiry is not None and expiry > time.monotonic()

    def add(self, member: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._expiry) >= self.max_size:
                self._expiry = {m: e for m, e in self._expiry.items() if e > now}
                if len(self._expiry) >= self.max_size:
                    self._expiry.clear()
            self._expiry[member] = now + self.ttl

    def clear(self) -> None:
        with self._lock:
            self._expiry.clear()
