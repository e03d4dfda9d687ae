"""The flush's claim and release steps, and the walk that cuts the dirty students into chunks.

Claim: one Lua call per shard (``wallets.cache.claim``) moves the students' pending events under a
claim id with a lease (from Redis TIME); an expired claim is adopted, a live one left alone.
Release: after the chunk's commit, this claim's events are deleted (checking the claim id); on a
database outage they are handed back (``abandon``) for the retry to adopt at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from django.conf import settings

from core import hotstate
from wallets import cache
from wallets.flush_state import FlushSummary


def _groups(player_ids: list[int] | None, shards: Sequence[int] | None) -> Iterator[dict[int, list[int]]]:
    if player_ids is not None:
        group: dict[int, list[int]] = {}
        for pid in sorted(set(player_ids)):
            shard = hotstate.shard_of(pid)
            if shards is None or shard in shards:
                group.setdefault(shard, []).append(pid)
        yield group
        return
    # Shard by shard, node by node (one node on a single Redis): each pipeline goes to one node.
    walk = range(settings.MEMORA_REDIS_SHARDS) if shards is None else shards
    for node_shards in hotstate.shard_groups(walk):
        for start in range(0, len(node_shards), 128):
            found = cache.dirty_members(node_shards[start : start + 128])
            if found:
                yield found


def chunks(player_ids: list[int] | None, shards: Sequence[int] | None, size: int) -> Iterator[dict[int, list[int]]]:
    """The students to flush (``player_ids``, or every dirty student of ``shards``, default all),
    by shard, about ``size`` students a chunk."""
    batch: dict[int, list[int]] = {}
    batch_size = 0
    for group in _groups(player_ids, shards):
        for shard, pids in group.items():
            for i in range(0, len(pids), size):
                part = pids[i : i + size]
                batch.setdefault(shard, []).extend(part)
                batch_size += len(part)
                if batch_size >= size:
                    yield batch
                    batch, batch_size = {}, 0
    if batch:
        yield batch


def claim(claim_id: str, by_shard: dict[int, list[int]]) -> dict[int, cache.Claimed]:
    return cache.claim(claim_id=claim_id, lease_seconds=settings.MEMORA_FLUSH_LEASE, by_shard=by_shard)


def release(claim_id: str, pids: list[int]) -> None:
    """The written events deleted (this claim's only)."""
    if pids:
        cache.release(claim_id=claim_id, pids=pids)


def hand_back(claim_id: str, pids: list[int]) -> None:
    """The database is away: the events handed back for the retry to adopt at once."""
    cache.release(claim_id=claim_id, pids=pids, abandon=True)


def count_unflushed(by_shard: dict[int, list[int]], summary: FlushSummary) -> None:
    """A dry run: what would be flushed, claiming nothing."""
    for pid in (p for ps in by_shard.values() for p in ps):
        _version, events = cache.read_unflushed(pid)
        if events:
            summary.students += 1
            summary.events += len(events)
