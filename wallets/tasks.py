from __future__ import annotations

import contextlib
import uuid

from celery import shared_task
from django.conf import settings
from django.db import OperationalError

from core import hotstate
from wallets import flush

_unlock = hotstate.LuaScript.load(__file__, "unlock", args=("token",))


@shared_task(bind=True, ignore_result=True, max_retries=8)
def flush_wallets(self) -> int:  # type: ignore[no-untyped-def]
    """The beat flush. A lock keeps two beat runs from overlapping (correctness does not depend
    on it: the claims do). The database away: retry with backoff; nothing is lost meanwhile."""
    lock = f"{settings.MEMORA_REDIS_KEY_PREFIX}:flush:lock"
    token = uuid.uuid4().hex
    try:
        acquired = hotstate.call(lambda r: r.set(lock, token, nx=True, ex=settings.MEMORA_FLUSH_LEASE))
    except hotstate.RedisUnavailable:
        return 0  # nothing can be claimed while Redis is away
    if not acquired:
        return 0
    try:
        return flush.wallet_flush(trigger="beat").events
    except OperationalError as exc:
        raise self.retry(exc=exc, countdown=min(300, 5 * 2**self.request.retries)) from exc
    finally:
        # If Redis is away the lock expires by itself.
        with contextlib.suppress(hotstate.RedisUnavailable):
            hotstate.call(lambda r: _unlock(r, [lock], _unlock.argv({"token": token})))
