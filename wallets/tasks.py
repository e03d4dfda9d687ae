from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from wallets import fanout


@shared_task(ignore_result=True)
def flush_wallets() -> int:
    """The beat flush: fans out, one ``flush_wallet_range`` task per range of shards
    (``MEMORA_FLUSH_FANOUT``) on the default queue, so the workers flush in parallel. Returns the
    number of ranges sent."""
    ranges = fanout.shard_ranges()
    for shards in ranges:
        flush_wallet_range.delay(shards.start, shards.stop)
    return len(ranges)


@shared_task(bind=True, ignore_result=True, max_retries=8)
def flush_wallet_range(self, start: int, stop: int) -> int:  # type: ignore[no-untyped-def]
    """Flush the shards [start, stop) under the range's lock (another flush holding it: nothing to
    do; correctness does not depend on it: the claims do). The database away: retry with backoff;
    nothing is lost meanwhile."""
    try:
        summary = fanout.wallet_flush_range(shards=range(start, stop), trigger="beat")
    except OperationalError as exc:
        raise self.retry(exc=exc, countdown=min(300, 5 * 2**self.request.retries)) from exc
    return summary.events if summary is not None else 0
