"""The flush fanned out: the shards cut into ranges, each flushed on its own.

Beat's ``flush_wallets`` task sends one ``flush_wallet_range`` task per range
(``MEMORA_FLUSH_FANOUT`` ranges of the ``MEMORA_REDIS_SHARDS`` shards), so N Celery workers
flush in parallel. Each range runs under a lock of its own (``SET NX`` with an expiry, deleted
only by its owner), so two beat runs, or a redelivered task, do not walk the same range at once.
The lock only saves work: the claims (``wallets.flush``) keep every event written once whatever
overlaps — a lock that expired under a slow flush, ranges cut differently after
``MEMORA_FLUSH_FANOUT`` changed, a ``sync_wallets`` by hand.

``sync_wallets --workers N`` does the same by hand: N processes, each taking the next range.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import multiprocessing
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.db import connections

from core import hotstate
from wallets import flush

_unlock = hotstate.LuaScript.load(__file__, "unlock", args=("token",))


def shard_ranges(parts: int | None = None) -> list[range]:
    """The shards cut into ``parts`` (default ``MEMORA_FLUSH_FANOUT``) contiguous ranges of
    near-equal size; never more ranges than shards."""
    total = settings.MEMORA_REDIS_SHARDS
    n = max(1, min(parts if parts is not None else settings.MEMORA_FLUSH_FANOUT, total))
    bounds = [total * i // n for i in range(n + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


def range_lock_key(shards: range) -> str:
    return f"{settings.MEMORA_REDIS_KEY_PREFIX}:flush:lock:{shards.start}-{shards.stop}"


@contextlib.contextmanager
def range_lock(shards: range) -> Iterator[bool]:
    """Holds the range's lock for the block if it was free (yields True), else yields False.
    Raises RedisUnavailable when Redis cannot be asked. The lock expires after
    ``MEMORA_FLUSH_LEASE`` if its owner dies; only the owner deletes it."""
    key = range_lock_key(shards)
    token = uuid.uuid4().hex
    acquired = bool(hotstate.call(lambda r: r.set(key, token, nx=True, ex=settings.MEMORA_FLUSH_LEASE)))
    try:
        yield acquired
    finally:
        if acquired:
            # If Redis is away the lock expires by itself.
            with contextlib.suppress(hotstate.RedisUnavailable):
                hotstate.call(lambda r: _unlock(r, [key], _unlock.argv({"token": token})))


def wallet_flush_range(*, shards: range, trigger: str = "beat") -> flush.FlushSummary | None:
    """Flush one range of shards under its lock. None when another flush holds the range's lock;
    a summary with ``redis_unavailable`` when Redis cannot be asked. A database outage raises
    ``OperationalError`` (the lock is released: the retry takes it again)."""
    try:
        with range_lock(shards) as acquired:
            if not acquired:
                return None
            return flush.wallet_flush(shards=shards, trigger=trigger)
    except hotstate.RedisUnavailable:
        return flush.FlushSummary(redis_unavailable=True)


def merge(total: flush.FlushSummary, part: flush.FlushSummary) -> None:
    """Add one range's summary to the total."""
    for f in dataclasses.fields(total):
        mine, theirs = getattr(total, f.name), getattr(part, f.name)
        if isinstance(mine, bool):
            setattr(total, f.name, mine or theirs)
        elif isinstance(mine, int):
            setattr(total, f.name, mine + theirs)
        elif isinstance(mine, list):
            mine.extend(theirs)


def _flush_range(args: tuple[int, int, bool, str]) -> flush.FlushSummary:
    start, stop, dry_run, trigger = args
    return flush.wallet_flush(shards=range(start, stop), dry_run=dry_run, trigger=trigger)


def _child_started() -> None:
    # The parent's connections were closed before the fork; this keeps a child from ever reusing a
    # socket it inherited (Redis pools reset themselves on a new pid).
    connections.close_all()


def wallet_flush_parallel(
    *,
    workers: int,
    dry_run: bool = False,
    trigger: str = "manual",
    progress: Callable[[int], Any] | None = None,
) -> flush.FlushSummary:
    """The flush by hand on ``workers`` processes, each taking the next range of shards until none
    is left (at least ``workers`` ranges, ``MEMORA_FLUSH_FANOUT`` by default). No range lock: like
    a manual flush on one worker, it runs now whatever beat does (the claims keep it exactly
    once). ``progress`` is called with the students of each range as it finishes."""
    ranges = shard_ranges(max(settings.MEMORA_FLUSH_FANOUT, workers))
    jobs = [(r.start, r.stop, dry_run, trigger) for r in ranges]
    total = flush.FlushSummary()
    if workers <= 1:
        results: Iterator[flush.FlushSummary] = map(_flush_range, jobs)
        for part in results:
            merge(total, part)
            if progress is not None:
                progress(part.students)
        return total
    # fork: the children inherit the settings as they are (a test's key prefix and database too).
    connections.close_all()
    with multiprocessing.get_context("fork").Pool(workers, initializer=_child_started) as pool:
        for part in pool.imap_unordered(_flush_range, jobs):
            merge(total, part)
            if progress is not None:
                progress(part.students)
    return total
