"""The flush's write step: one transaction per chunk of claimed students.

The chunk's wallet rows are held (``FOR UPDATE``, player order). Whatever the claim — a Redis that
rolled back, or a flusher that stalled past its lease, hands out events already written — an event
at or below the wallet's mark is looked up by id, and every event's key digest among the student's
requests younger than the TTL; those found are dropped. The rest go in with a plain INSERT (never
IGNORE: it truncates and skips in silence on MariaDB); a batch the database refuses is retried
event by event, and an event still refused goes to the dead-letter table. The wallet adds exactly
the amounts inserted.

The events are decoded straight into their ledger rows (``wallets.events.decode``): the rows go to
``executemany`` as they are.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from typing import Any

from django.conf import settings
from django.db import DatabaseError, OperationalError, connection, transaction
from django.utils import timezone

from core import metrics
from players.models import PlayerProfile
from wallets import cache, selectors
from wallets.events import FlushEvent, LedgerRow, decode
from wallets.flush_sql import RETRYABLE, error_code, insert_sql, is_outage, one_statement_per_call, upsert_sql
from wallets.flush_state import FlushSummary, WalletRow
from wallets.models import DeadLetter, LedgerEvent, PlayerWallet, WalletOutbox

logger = logging.getLogger(__name__)

_LOOKUP_BATCH = 5000
# Ledger rows per INSERT statement.
INSERT_BATCH = 2000
_WALLET_COLUMNS = WalletRow.columns()
# What makes an event undecodable (it goes to the dead letters, the chunk goes on).
_UNDECODABLE = (ValueError, KeyError, TypeError, OverflowError)


def _order(event: FlushEvent) -> tuple[int, int]:
    return event.row.generation, event.row.version


def _dead_letter(pid: int, raw: Any, error: str, now: dt.datetime) -> DeadLetter:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        event_id = uuid.UUID(json.loads(text)["event_id"])
    except (ValueError, KeyError, TypeError, AttributeError):
        # Not even an id: one derived from the bytes, so a retry finds the same letter.
        event_id = uuid.uuid5(uuid.NAMESPACE_OID, text)
    return DeadLetter(player_id=pid, event_id=event_id, payload=text, error=error[:2000], created_at=now)


class ChunkWrite:
    """One chunk's write transaction."""

    def __init__(self, claimed: dict[int, cache.Claimed], summary: FlushSummary) -> None:
        self.claimed = claimed
        self.summary = summary
        self.statements = 0
        self.now = timezone.now()
        self.native_uuid = bool(connection.features.has_native_uuid_field)

    def _row_id(self, event_id: uuid.UUID) -> str:
        """An event id as the rows carry it."""
        return str(event_id) if self.native_uuid else event_id.hex

    def decode(self) -> tuple[dict[int, list[FlushEvent]], list[DeadLetter]]:
        decoded: dict[int, list[FlushEvent]] = {}
        letters: list[DeadLetter] = []
        native = self.native_uuid
        for pid, found in self.claimed.items():
            events: list[FlushEvent] = []
            decoded[pid] = events
            for raw in found.events:
                try:
                    events.append(decode(pid, raw, native_uuid=native))
                except _UNDECODABLE as exc:
                    logger.warning("flush: event of player %s dead-lettered (undecodable: %s)", pid, exc)
                    letters.append(_dead_letter(pid, raw, f"undecodable: {exc}", self.now))
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
                    upserts.append(wallets[pid].values())
            if upserts:
                with connection.cursor() as cursor:
                    one_statement_per_call(cursor)
                    cursor.executemany(upsert_sql(_WALLET_COLUMNS), upserts)
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
            .values(*_WALLET_COLUMNS)
        )
        self.statements += 1
        return {row["player_id"]: WalletRow(**row) for row in rows}

    def _already_written(self, decoded: dict[int, list[FlushEvent]], wallets: dict[int, WalletRow]) -> set[str]:
        """The ids (as the rows carry them) of the events already in the ledger — looked up only
        at or below the wallet's mark — or already dead-lettered."""
        suspects = [
            (pid, uuid.UUID(e.row.event_id), dt.datetime.fromisoformat(e.row.accepted_at).replace(tzinfo=dt.UTC))
            for pid, events in decoded.items()
            for e in events
            if _order(e) <= wallets[pid].mark
        ]
        found: set[uuid.UUID] = set()
        if suspects:
            found = selectors.ledger_events_written(suspects)
            self.statements += -(-len(suspects) // 1000)
        if DeadLetter.objects.exists():
            ids = [uuid.UUID(e.row.event_id) for events in decoded.values() for e in events]
            found |= self._ids_in(DeadLetter, ids)
        self.statements += 1
        return {self._row_id(event_id) for event_id in found}

    def _drop_known(
        self, decoded: dict[int, list[FlushEvent]], wallets: dict[int, WalletRow], letters: list[DeadLetter]
    ) -> dict[int, list[FlushEvent]]:
        """Every event already written (by id, at or below the mark), already dead-lettered, or
        of a request already counted (by key digest): dropped."""
        written = self._already_written(decoded, wallets)
        pairs = {(pid, e.row.idem_digest) for pid, events in decoded.items() for e in events if e.row.idem_digest}
        counted = self._requests_in_ledger(pairs) if pairs else set()
        fresh: dict[int, list[FlushEvent]] = {}
        for pid, events in decoded.items():
            keep: list[FlushEvent] = []
            # The request that first claimed a key in this chunk keeps it; another with the same
            # key (accepted again after a rollback lost the first's record) is a duplicate.
            owner: dict[bytes, str] = {}
            duplicate = False
            for e in sorted(events, key=_order):
                if written and e.row.event_id in written:
                    self.summary.already_written += 1
                    continue
                digest = e.row.idem_digest
                if digest is not None:
                    first = owner.setdefault(digest, e.request_id)
                    if first != e.request_id or (counted and (pid, digest) in counted):
                        duplicate = True
                        self.summary.duplicates += 1
                        continue
                keep.append(e)
            fresh[pid] = keep
            if duplicate:
                self.summary.rebuild_players.append(pid)
        return fresh

    def _insert(self, fresh: dict[int, list[FlushEvent]], letters: list[DeadLetter]) -> dict[int, list[LedgerRow]]:
        rows = [e.row for pid in sorted(fresh) for e in fresh[pid]]
        inserted: dict[int, list[LedgerRow]] = {}
        sql = insert_sql()
        for i in range(0, len(rows), INSERT_BATCH):
            batch = rows[i : i + INSERT_BATCH]
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    one_statement_per_call(cursor)
                    cursor.executemany(sql, batch)
                self.statements += 1
                accepted = batch
            except OperationalError as exc:
                if is_outage(exc):
                    raise
                accepted = self._one_by_one(batch, letters)
            except DatabaseError:
                accepted = self._one_by_one(batch, letters)
            for row in accepted:
                inserted.setdefault(row.player_id, []).append(row)
        return inserted

    def _one_by_one(self, batch: list[LedgerRow], letters: list[DeadLetter]) -> list[LedgerRow]:
        accepted = []
        for row in batch:
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(insert_sql(), row)
                accepted.append(row)
            except OperationalError as exc:
                if is_outage(exc):
                    raise
                letters.append(self._letter(row, exc))
            except DatabaseError as exc:
                letters.append(self._letter(row, exc))
            self.statements += 1
        return accepted

    def _letter(self, row: LedgerRow, exc: Exception) -> DeadLetter:
        event_id = uuid.UUID(row.event_id)
        logger.warning("flush: event %s of player %s dead-lettered: %s", event_id, row.player_id, exc)
        raw = self.claimed[row.player_id].by_id().get(str(event_id), "")
        return DeadLetter(
            player_id=row.player_id, event_id=event_id, payload=raw, error=str(exc)[:2000], created_at=self.now
        )


def write_chunk(claimed: dict[int, cache.Claimed], summary: FlushSummary) -> list[int]:
    """Write one chunk; a deadlock or a lock-wait timeout retries it, a lost connection raises."""
    for attempt in range(5):
        before = (len(summary.rebuild_players), summary.duplicates, summary.already_written)
        try:
            return ChunkWrite(claimed, summary).write()
        except OperationalError as exc:
            code = error_code(exc)
            if code not in RETRYABLE or attempt == 4:
                raise
            logger.warning("flush: chunk retried after MariaDB error %s", code)
            del summary.rebuild_players[before[0] :]
            summary.duplicates, summary.already_written = before[1], before[2]
    raise AssertionError("unreachable")
