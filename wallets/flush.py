"""The flush: pending events from Redis to the ledger, exactly once — claim, write, release.

1. Claim (``wallets.flush_claim``): one Lua call per shard moves the students' pending events under
   a claim id with a lease (from Redis TIME); an expired claim is adopted, a live one left alone.
2. Write (``wallets.flush_write``): one transaction per chunk holding the chunk's wallet rows;
   events already written or already counted are dropped, the rest inserted (plain INSERTs built by
   ``wallets.flush_sql``), the wallets patched by name (``WalletRow``).
3. Release (``wallets.flush_claim``): after commit, delete this claim's events (checking the claim
   id).

Tests stall, kill or stop a flusher through one seam, ``hooks`` (``wallets.flush_hooks``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from core import hotstate, metrics
from wallets import flush_claim, sync
from wallets.flush_hooks import Hooks, hooks
from wallets.flush_state import FlushSummary, WalletRow
from wallets.flush_write import write_chunk
from wallets.models import FlushRun

__all__ = ["FlushSummary", "Hooks", "WalletRow", "hooks", "wallet_flush"]

logger = logging.getLogger(__name__)


def wallet_flush(
    *,
    player_ids: list[int] | None = None,
    shards: Sequence[int] | None = None,
    dry_run: bool = False,
    trigger: str = "beat",
    progress: Callable[[int], Any] | None = None,
    after_chunk: Callable[[int], Any] | None = None,
) -> FlushSummary:
    """Flush pending events to the database: claim, write, release, shard by shard. ``shards``
    limits the walk to those shards (one range of the fan-out, ``wallets.fanout``); the claims keep
    it exactly once whatever another flush walks meanwhile."""
    try:
        return _wallet_flush(
            player_ids=player_ids,
            shards=shards,
            dry_run=dry_run,
            trigger=trigger,
            progress=progress,
            after_chunk=after_chunk,
        )
    except hotstate.RedisUnavailable as exc:
        # Nothing can be claimed while Redis is away; its events wait there for the next run.
        logger.warning("flush skipped: Redis unavailable (%s)", exc)
        return FlushSummary(redis_unavailable=True)


def _flush_chunk(claim_id: str, by_shard: dict[int, list[int]], summary: FlushSummary) -> int:
    """Claim, write, release one chunk; the students claimed."""
    claimed = flush_claim.claim(claim_id, by_shard)
    if not claimed:
        return 0
    hooks.writing(summary.chunks + 1)
    try:
        written = write_chunk(claimed, summary)
    except OperationalError:
        flush_claim.hand_back(claim_id, list(claimed))
        raise
    hooks.written(summary.chunks)
    flush_claim.release(claim_id, written)
    while summary.rebuild_players:
        sync.wallet_cache_sync(player_id=summary.rebuild_players.pop())
    return len(claimed)


def _wallet_flush(
    *,
    player_ids: list[int] | None,
    shards: Sequence[int] | None,
    dry_run: bool,
    trigger: str,
    progress: Callable[[int], Any] | None,
    after_chunk: Callable[[int], Any] | None,
) -> FlushSummary:
    started = timezone.now()
    clock = time.monotonic()
    summary = FlushSummary()
    claim_id = uuid.uuid4().hex
    for by_shard in flush_claim.chunks(player_ids, shards, settings.MEMORA_FLUSH_CHUNK):
        if dry_run:
            flush_claim.count_unflushed(by_shard, summary)
            continue
        students = _flush_chunk(claim_id, by_shard, summary)
        if not students:
            continue
        if progress is not None:
            progress(students)
        if after_chunk is not None:
            after_chunk(summary.chunks)
    if dry_run:
        return summary
    metrics.FLUSH_SECONDS.observe(time.monotonic() - clock)
    if summary.students or player_ids is None:
        FlushRun.objects.create(
            started_at=started,
            finished_at=timezone.now(),
            students=summary.students,
            events=summary.events,
            set_aside=summary.dead_lettered,
            statements=summary.statements,
            trigger=trigger,
        )
    return summary
