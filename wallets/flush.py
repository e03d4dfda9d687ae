"""The flush: pending events from Redis to the ledger, exactly once — claim, write, release.

1. Claim: one Lua call per shard moves the students' pending events under a claim id with a
   lease (from Redis TIME); an expired claim is adopted, a live one left alone.
2. Write: one transaction per chunk holding the chunk's wallet rows (``FOR UPDATE``, player
   order). Whatever the claim — a Redis that rolled back, or a flusher that stalled past its lease,
   hands out events already written — an event at or below the wallet's mark is looked up by id,
   and every event's key digest among the student's requests younger than the TTL; those found
   are dropped. The rest go in with a plain INSERT (never IGNORE: it truncates and skips in silence
   on MariaDB); a batch the database refuses is retried event by event, and an event still refused
   goes to the dead-letter table. The wallet adds exactly the amounts inserted.
3. Release: after commit, delete this claim's events (checking the claim id).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, OperationalError, connection, transaction
from django.utils import timezone

from core import hotstate, metrics
from players.models import PlayerProfile
from wallets import cache, selectors, sync
from wallets.events import LEDGER_COLUMNS, PendingEvent, sql_datetime
from wallets.models import DeadLetter, FlushRun, LedgerEvent, PlayerWallet, WalletOutbox

logger = logging.getLogger(__name__)

# MariaDB's deadlock and lock-wait timeout: the chunk is retried. Any other OperationalError (a
# lost connection) is an outage: the claims are handed back for the next run.
_RETRYABLE = {1205, 1213}
_LOOKUP_BATCH = 5000
_INSERT_BATCH = 2000


@dataclass
class FlushSummary:
    students: int = 0
    events: int = 0
    # Events already in the ledger (a rollback or a stalled flusher handed them out again).
    already_written: int = 0
    # Events whose request was already counted (its key digest is in the ledger).
    duplicates: int = 0
    dead_lettered: int = 0
    # Events of students deleted while they waited.
    dropped_deleted: int = 0
    statements: int = 0
    chunks: int = 0
    redis_unavailable: bool = False
    # Students whose Redis wallet must be rebuilt once their claims are released.
    rebuild_players: list[int] = field(default_factory=list)


@dataclass
class WalletRow:
    """A wallet row as the flush reads and writes it, by field name (never by tuple position)."""

    player_id: int
    xp_total: int
    current_streak: int
    longest_streak: int
    last_activity_date: dt.date | None
    streak_freezes: int
    streak_lost: int
    version: int
    applied_generation: int
    generation: int
    created_at: Any
    updated_at: Any

    @property
    def mark(self) -> tuple[int, int]:
        return self.applied_generation, self.version

    def apply(self, inserted: list[PendingEvent], now: dt.datetime) -> None:
        self.xp_total += sum(e.amount for e in inserted)
        newest = max(inserted, key=lambda e: e.order)
        # Only an event newer than the row's: a database-path day is never overwritten by an
        # older Redis version.
        if newest.order > self.mark:
            longest = max(newest.longest_after, self.longest_streak)
            self.current_streak = min(newest.streak_after, longest)
            self.longest_streak = longest
            self.last_activity_date = newest.last_day_after
            self.streak_freezes = newest.freezes_after
            self.streak_lost = newest.streak_lost_after
            self.applied_generation, self.version = newest.order
        self.updated_at = now


_WALLET_COLUMNS = tuple(WalletRow.__dataclass_fields__)
# A column may keep an older name than its field (wallets.cache documents them).
_WALLET_DB_COLUMNS: dict[str, str] = {f.attname: f.column for f in PlayerWallet._meta.concrete_fields}


class Hooks:
    """Test seams: called with the chunk number; a test makes a flusher stall or die there."""

    before_write: Callable[[int], None] | None = None
    after_write: Callable[[int], None] | None = None


hooks = Hooks()


def _dead_letter_rows(pid: int, raw: Any, error: str, now: dt.datetime) -> DeadLetter:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        event_id = uuid.UUID(json.loads(text)["event_id"])
    except (ValueError, KeyError, TypeError):
        # Not even an id: one derived from the bytes, so a retry finds the same letter.
        event_id = uuid.uuid5(uuid.NAMESPACE_OID, text)
    return DeadLetter(player_id=pid, event_id=event_id, payload=text, error=error[:2000], created_at=now)


def _insert_sql() -> str:
    table = connection.ops.quote_name(LedgerEvent._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in LEDGER_COLUMNS)
    marks = ", ".join(["%s"] * len(LEDGER_COLUMNS))
    return f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 (names from the model)


def _upsert_sql() -> str:
    table = connection.ops.quote_name(PlayerWallet._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(_WALLET_DB_COLUMNS[c]) for c in _WALLET_COLUMNS)
    marks = ", ".join(["%s"] * len(_WALLET_COLUMNS))
    updated = [_WALLET_DB_COLUMNS[c] for c in _WALLET_COLUMNS if c not in ("player_id", "generation", "created_at")]
    q = connection.ops.quote_name
    if connection.vendor == "mysql":
        assign = ", ".join(f"{q(c)} = VALUES({q(c)})" for c in updated)
        tail = f"ON DUPLICATE KEY UPDATE {assign}"
    else:
        assign = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in updated)
        tail = f"ON CONFLICT (player_id) DO UPDATE SET {assign}"
    return f"INSERT INTO {table} ({columns}) VALUES ({marks}) {tail}"  # noqa: S608 (names from the model)


def _sql_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return sql_datetime(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _one_statement_per_call(cursor: Any) -> None:
    """mysqlclient's executemany cuts a multi-row INSERT at 64 KiB: let one call be one statement."""
    raw: Any = getattr(getattr(cursor, "cursor", None), "cursor", None)
    if connection.vendor == "mysql" and hasattr(raw, "max_stmt_length"):
        raw.max_stmt_length = 8 * 1024 * 1024


class _Chunk:
    """One chunk's write transaction."""

    def __init__(self, claimed: dict[int, cache.Claimed], summary: FlushSummary) -> None:
        self.claimed = claimed
        self.summary = summary
        self.statements = 0
        self.now = timezone.now()
        self.native_uuid = bool(connection.features.has_native_uuid_field)

    def decode(self) -> tuple[dict[int, list[PendingEvent]], list[DeadLetter]]:
        decoded: dict[int, list[PendingEvent]] = {}
        letters: list[DeadLetter] = []
        for pid, found in self.claimed.items():
            events = decoded.setdefault(pid, [])
            for raw in found.events:
                try:
                    events.append(PendingEvent.from_redis(pid, raw))
                except (ValueError, KeyError, TypeError) as exc:
                    logger.warning("flush: event of player %s dead-lettered (undecodable: %s)", pid, exc)
                    letters.append(_dead_letter_rows(pid, raw, f"undecodable: {exc}", self.now))
        return decoded, letters

    def _ids_in(self, model: Any, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        found: set[uuid.UUID] = set()
        for i in range(0, len(ids), _LOOKUP_BATCH):
            found |= set(
                model.objects.filter(event_id__in=ids[i : i + _LOOKUP_BATCH]).values_list("event_id", flat=True)
            )
            self.statements += 1
        return found

    def _requests_in_ledger(self, pairs: set[tuple[int, bytes]]) -> set[tuple[int, bytes]]:
        """The (student, key digest) pairs already counted: among each student's rows younger than
        the TTL (the history index's range; the digest has no index of its own)."""
        cutoff = self.now - dt.timedelta(seconds=settings.MEMORA_IDEMPOTENCY_TTL)
        pids = sorted({pid for pid, _ in pairs})
        found: set[tuple[int, bytes]] = set()
        for i in range(0, len(pids), _LOOKUP_BATCH):
            rows = LedgerEvent.objects.filter(
                player_id__in=pids[i : i + _LOOKUP_BATCH], accepted_at__gte=cutoff, idem_digest__isnull=False
            ).values_list("player_id", "idem_digest")
            found |= {(pid, bytes(d or b"")) for pid, d in rows if (pid, bytes(d or b"")) in pairs}
            self.statements += 1
        return found

    def write(self) -> list[int]:
        """The transaction; returns the students whose claims may be released."""
        decoded, letters = self.decode()
        pids = sorted(self.claimed)
        with transaction.atomic():
            alive = set(PlayerProfile.objects.filter(pk__in=pids).values_list("pk", flat=True))
            self.statements += 1
            for pid in pids:
                if pid not in alive:
                    gone = len(self.claimed[pid].events)
                    logger.warning("flush: player %s no longer exists; %s events dropped", pid, gone)
                    metrics.FLUSH_DROPPED_DELETED.inc(gone)
                    self.summary.dropped_deleted += gone
                    decoded.pop(pid, None)
            letters = [d for d in letters if d.player_id in alive]
            live = sorted(decoded)
            wallets = self._lock_wallets(live)
            fresh = self._drop_known(decoded, wallets, letters)
            inserted = self._insert(fresh, letters)
            if letters:
                DeadLetter.objects.bulk_create(letters, ignore_conflicts=True)
                self.statements += 1
                metrics.DEAD_LETTERS.inc(len(letters))
                self.summary.dead_lettered += len(letters)
            upserts = []
            for pid in live:
                if inserted.get(pid):
                    wallets[pid].apply(inserted[pid], self.now)
                    upserts.append(tuple(_sql_value(v) for v in astuple(wallets[pid])))
            if upserts:
                with connection.cursor() as cursor:
                    _one_statement_per_call(cursor)
                    cursor.executemany(_upsert_sql(), upserts)
                self.statements += 1
            rebuild = sorted(set(self.summary.rebuild_players) & set(live))
            if rebuild:
                WalletOutbox.objects.bulk_create(
                    [
                        WalletOutbox(player_id=pid, generation=wallets[pid].generation, created_at=self.now)
                        for pid in rebuild
                    ]
                )
                self.statements += 1
        events = sum(len(v) for v in inserted.values())
        self.summary.students += len(pids)
        self.summary.events += events
        self.summary.statements += self.statements
        self.summary.chunks += 1
        metrics.WALLET_WRITES_AVOIDED.inc(max(events - len(upserts), 0))
        return pids

    def _lock_wallets(self, pids: list[int]) -> dict[int, WalletRow]:
        if not pids:
            return {}
        existing = set(PlayerWallet.objects.filter(player_id__in=pids).values_list("player_id", flat=True))
        self.statements += 1
        missing = [PlayerWallet(player_id=pid) for pid in pids if pid not in existing]
        if missing:
            PlayerWallet.objects.bulk_create(missing, ignore_conflicts=True)
            self.statements += 1
        rows = (
            PlayerWallet.objects.select_for_update()
            .filter(player_id__in=pids)
            .order_by("player_id")
            .values_list(*_WALLET_COLUMNS)
        )
        self.statements += 1
        return {row[0]: WalletRow(*row) for row in rows}

    def _drop_known(
        self, decoded: dict[int, list[PendingEvent]], wallets: dict[int, WalletRow], letters: list[DeadLetter]
    ) -> dict[int, list[PendingEvent]]:
        """Every event already written (by id, at or below the mark), already dead-lettered, or
        of a request already counted (by key digest): dropped."""
        suspects = [
            (pid, e.event_id, e.accepted_at)
            for pid, events in decoded.items()
            for e in events
            if e.order <= wallets[pid].mark
        ]
        written: set[uuid.UUID] = set()
        if suspects:
            written = selectors.ledger_events_written(suspects)
            self.statements += -(-len(suspects) // 1000)
        lettered: set[uuid.UUID] = set()
        if DeadLetter.objects.exists():
            lettered = self._ids_in(DeadLetter, [e.event_id for events in decoded.values() for e in events])
        self.statements += 1
        pairs = {(pid, e.idem_digest) for pid, events in decoded.items() for e in events if e.idem_digest}
        counted = self._requests_in_ledger(pairs) if pairs else set()
        fresh: dict[int, list[PendingEvent]] = {}
        for pid, events in decoded.items():
            keep: list[PendingEvent] = []
            # The request that first claimed a key in this chunk keeps it; another with the same
            # key (accepted again after a rollback lost the first's record) is a duplicate.
            owner: dict[bytes, str] = {}
            duplicate = False
            for e in sorted(events, key=lambda e: e.order):
                if e.event_id in written or e.event_id in lettered:
                    self.summary.already_written += 1
                    continue
                if e.idem_digest is not None:
                    first = owner.setdefault(e.idem_digest, e.request_id)
                    if (pid, e.idem_digest) in counted or first != e.request_id:
                        duplicate = True
                        self.summary.duplicates += 1
                        continue
                keep.append(e)
            fresh[pid] = keep
            if duplicate:
                self.summary.rebuild_players.append(pid)
        return fresh

    def _insert(self, fresh: dict[int, list[PendingEvent]], letters: list[DeadLetter]) -> dict[int, list[PendingEvent]]:
        events = [e for pid in sorted(fresh) for e in fresh[pid]]
        inserted: dict[int, list[PendingEvent]] = {}
        for i in range(0, len(events), _INSERT_BATCH):
            batch = events[i : i + _INSERT_BATCH]
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    _one_statement_per_call(cursor)
                    cursor.executemany(_insert_sql(), [e.row(native_uuid=self.native_uuid) for e in batch])
                self.statements += 1
                accepted = batch
            except OperationalError as exc:
                if _is_outage(exc):
                    raise
                accepted = self._one_by_one(batch, letters)
            except DatabaseError:
                accepted = self._one_by_one(batch, letters)
            for e in accepted:
                inserted.setdefault(e.player_id, []).append(e)
        return inserted

    def _one_by_one(self, batch: list[PendingEvent], letters: list[DeadLetter]) -> list[PendingEvent]:
        accepted = []
        for e in batch:
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(_insert_sql(), e.row(native_uuid=self.native_uuid))
                accepted.append(e)
            except OperationalError as exc:
                if _is_outage(exc):
                    raise
                letters.append(self._letter(e, exc))
            except DatabaseError as exc:
                letters.append(self._letter(e, exc))
            self.statements += 1
        return accepted

    def _letter(self, e: PendingEvent, exc: Exception) -> DeadLetter:
        logger.warning("flush: event %s of player %s dead-lettered: %s", e.event_id, e.player_id, exc)
        raw = self.claimed[e.player_id].by_id().get(str(e.event_id), "")
        return DeadLetter(
            player_id=e.player_id, event_id=e.event_id, payload=raw, error=str(exc)[:2000], created_at=self.now
        )


def _is_outage(exc: OperationalError) -> bool:
    """True for what must end the chunk: a lost connection (a client error, 2000 and up), or a
    deadlock or lock-wait timeout (InnoDB rolled the transaction back: the chunk is retried). Any
    other server error refuses only the statement, which is retried event by event."""
    code = exc.args[0] if exc.args else None
    return code in _RETRYABLE or not (isinstance(code, int) and 1000 <= code < 2000)


def _write_chunk(claimed: dict[int, cache.Claimed], summary: FlushSummary) -> list[int]:
    """Write one chunk; a deadlock or a lock-wait timeout retries it, a lost connection raises."""
    for attempt in range(5):
        before = (len(summary.rebuild_players), summary.duplicates, summary.already_written)
        try:
            return _Chunk(claimed, summary).write()
        except OperationalError as exc:
            code = exc.args[0] if exc.args else None
            if code not in _RETRYABLE or attempt == 4:
                raise
            logger.warning("flush: chunk retried after MariaDB error %s", code)
            del summary.rebuild_players[before[0] :]
            summary.duplicates, summary.already_written = before[1], before[2]
    raise AssertionError("unreachable")


def _barrier(chunks: int) -> None:
    """A test hook across processes: with MEMORA_FLUSH_BARRIER_AFTER_CHUNK = k, the flush stops after
    writing chunk k (committed, not yet released), says so in Redis and waits to be released (or
    killed)."""
    k = settings.MEMORA_FLUSH_BARRIER_AFTER_CHUNK
    if not k or chunks != k:
        return
    prefix = settings.MEMORA_REDIS_KEY_PREFIX
    hotstate.call(lambda r: r.set(f"{prefix}:barrier:reached", chunks))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not hotstate.call(lambda r: r.get(f"{prefix}:barrier:release")):
        time.sleep(0.05)


def wallet_flush(
    *,
    player_ids: list[int] | None = None,
    shards: Sequence[int] | None = None,
    dry_run: bool = False,
    trigger: str = "beat",
    progress: Any = None,
    after_chunk: Any = None,
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


def _groups(player_ids: list[int] | None, shards: Sequence[int] | None = None) -> list[dict[int, list[int]]]:
    if player_ids is not None:
        group: dict[int, list[int]] = {}
        for pid in sorted(set(player_ids)):
            shard = hotstate.shard_of(pid)
            if shards is None or shard in shards:
                group.setdefault(shard, []).append(pid)
        return [group]
    # Shard by shard, node by node (one node on a single Redis): each pipeline goes to one node.
    groups = []
    walk = range(settings.MEMORA_REDIS_SHARDS) if shards is None else shards
    for node_shards in hotstate.shard_groups(walk):
        for start in range(0, len(node_shards), 128):
            found = cache.dirty_members(node_shards[start : start + 128])
            if found:
                groups.append(found)
    return groups


def _dry_run(by_shard: dict[int, list[int]], summary: FlushSummary) -> None:
    for pid in (p for ps in by_shard.values() for p in ps):
        _version, events = cache.read_unflushed(pid)
        if events:
            summary.students += 1
            summary.events += len(events)


def _wallet_flush(
    *,
    player_ids: list[int] | None,
    shards: Sequence[int] | None,
    dry_run: bool,
    trigger: str,
    progress: Any,
    after_chunk: Any,
) -> FlushSummary:
    started = timezone.now()
    clock = time.monotonic()
    summary = FlushSummary()
    claim_id = uuid.uuid4().hex
    chunk_size = settings.MEMORA_FLUSH_CHUNK

    def process(by_shard: dict[int, list[int]]) -> None:
        if dry_run:
            _dry_run(by_shard, summary)
            return
        claimed = cache.claim(claim_id=claim_id, lease_seconds=settings.MEMORA_FLUSH_LEASE, by_shard=by_shard)
        if not claimed:
            return
        if hooks.before_write is not None:
            hooks.before_write(summary.chunks + 1)
        try:
            written = _write_chunk(claimed, summary)
        except OperationalError:
            # The database is away: hand the events back for the retry to adopt at once.
            cache.release(claim_id=claim_id, pids=list(claimed), abandon=True)
            raise
        if hooks.after_write is not None:
            hooks.after_write(summary.chunks)
        _barrier(summary.chunks)
        if written:
            cache.release(claim_id=claim_id, pids=written)
        while summary.rebuild_players:
            sync.wallet_cache_sync(player_id=summary.rebuild_players.pop())
        if progress is not None:
            progress(len(claimed))
        if after_chunk is not None:
            after_chunk(summary.chunks)

    batch: dict[int, list[int]] = {}
    batch_size = 0
    for group in _groups(player_ids, shards):
        for shard, pids in group.items():
            for i in range(0, len(pids), chunk_size):
                part = pids[i : i + chunk_size]
                batch.setdefault(shard, []).extend(part)
                batch_size += len(part)
                if batch_size >= chunk_size:
                    process(batch)
                    batch, batch_size = {}, 0
    if batch:
        process(batch)
    if not dry_run:
        metrics.FLUSH_SECONDS.observe(time.monotonic() - clock)
    if not dry_run and (summary.students or player_ids is None):
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
