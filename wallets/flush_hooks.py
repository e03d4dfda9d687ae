"""The flush's one seam for tests: where a test makes a flusher stall, die or wait.

``hooks.before_write`` / ``hooks.after_write`` are called with the chunk number in this process;
``MEMORA_FLUSH_BARRIER_AFTER_CHUNK`` stops a flusher in another process (a Celery worker, a
``sync_wallets``) after a chunk, until the test releases it through Redis. Production sets none.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings

from core import hotstate


class Hooks:
    """Test seams: called with the chunk number; a test makes a flusher stall or die there."""

    before_write: Callable[[int], None] | None = None
    after_write: Callable[[int], None] | None = None

    def written(self, chunks: int) -> None:
        """After chunk ``chunks`` is committed, before its claims are released."""
        if self.after_write is not None:
            self.after_write(chunks)
        self.barrier(chunks)

    def writing(self, chunks: int) -> None:
        """Before chunk ``chunks`` is written (its events claimed)."""
        if self.before_write is not None:
            self.before_write(chunks)

    @staticmethod
    def barrier(chunks: int) -> None:
        """Across processes: with ``MEMORA_FLUSH_BARRIER_AFTER_CHUNK`` = k, the flush stops after
        writing chunk k (committed, not yet released), says so in Redis and waits to be released
        (or killed)."""
        k = settings.MEMORA_FLUSH_BARRIER_AFTER_CHUNK
        if not k or chunks != k:
            return
        prefix = settings.MEMORA_REDIS_KEY_PREFIX
        hotstate.call(lambda r: r.set(f"{prefix}:barrier:reached", chunks))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not hotstate.call(lambda r: r.get(f"{prefix}:barrier:release")):
            time.sleep(0.05)


hooks = Hooks()
