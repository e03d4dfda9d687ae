"""The student's wallet in Redis: rebuilt from the database (and the events still pending) after a
database-first change or when a copy is absent or suspect; read as the student sees it."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core import hotstate
from players import timezones
from players.models import PlayerProfile
from wallets import cache, replay, rules, selectors
from wallets.events import counted_event
from wallets.models import DeadLetter, EventKind, LedgerEvent, PlayerWallet, WalletOutbox
from wallets.wallethash import WalletHash

logger = logging.getLogger(__name__)


def wallet_cache_sync(*, player_id: int) -> bool:
    """Rebuild the student's Redis wallet after a database-first change; True once Redis holds it."""
    try:
        wallet_cache_sync_or_raise(player_id=player_id)
    except hotstate.RedisUnavailable:
        return False
    return True


def wallet_cache_sync_or_raise(*, player_id: int) -> None:
    """:func:`wallet_cache_sync`, raising RedisUnavailable. Until it succeeds, this process does not
    trust the student's Redis wallet (it missed a change)."""
    try:
        generation = wallet_cache_rebuild(player_id=player_id, force=True)
    except hotstate.RedisUnavailable:
        cache.stale_players.add(player_id)
        raise
    except PlayerProfile.DoesNotExist:
        generation = None
    cache.stale_players.discard(player_id)
    # Only the rows this rebuild covered: a change committed meanwhile keeps its row for the next.
    rows = WalletOutbox.objects.filter(player_id=player_id)
    if generation is not None:
        rows = rows.filter(generation__lte=generation)
    rows.delete()


def _event_order(event: dict[str, Any]) -> tuple[int, int]:
    return int(event.get("gen") or 0), int(event["version"])


def wallet_cache_rebuild(*, player_id: int, force: bool = False) -> int | None:
    """Load the wallet into Redis from the database plus the events still pending in Redis (and
    the dead letters, which count as accepted); the database generation written, or None when a
    warm copy was left alone.

    Redis is read first and the ledger second, so an event flushed in between is counted once; the
    wallet row and the ledger are read in one transaction holding the row (shared), so no flush
    commits between the two reads. Raises RedisUnavailable.
    """
    for _attempt in range(5):
        version, unflushed = cache.read_unflushed(player_id)
        if version is not None and not force:
            return None
        profile = PlayerProfile.objects.get(pk=player_id)
        with transaction.atomic():
            PlayerWallet.objects.get_or_create(player_id=player_id)
            locked = PlayerWallet.objects.filter(player_id=player_id)
            # MariaDB 10.11 has no FOR SHARE: LOCK IN SHARE MODE, raw, on that backend.
            if connection.vendor == "mysql":
                table = connection.ops.quote_name(PlayerWallet._meta.db_table)
                wallet = PlayerWallet.objects.raw(
                    f"SELECT * FROM {table} WHERE player_id = %s LOCK IN SHARE MODE",  # noqa: S608
                    [player_id],
                )[0]
            else:
                wallet = locked.select_for_update().get()
            state = _rebuild_state(player_id=player_id, profile=profile, wallet=wallet, unflushed=unflushed)
        written = cache.rebuild(
            pid=player_id,
            generation=wallet.generation,
            expected_version=version,
            fields=state.wallet,
            lessons=state.lessons,
            idem_records=state.records,
            idem_ttl_ms=settings.MEMORA_IDEMPOTENCY_TTL * 1000,
        )
        if written >= 0:
            return int(wallet.generation)
    raise hotstate.RedisUnavailable("wallet kept changing during the rebuild", certainly_not_run=True)


@dataclass(frozen=True)
class _RebuildState:
    wallet: WalletHash
    lessons: list[str]
    records: dict[str, str]


def _written_keys(player_id: int, events: dict[str, dict[str, Any]]) -> list[tuple[int, uuid.UUID, dt.datetime]]:
    """The ledger's keys of these events; one without a time never decoded, so was never written."""
    keys = []
    for event_id, e in events.items():
        with contextlib.suppress(KeyError, TypeError, ValueError, OverflowError, OSError):
            keys.append((player_id, uuid.UUID(event_id), dt.datetime.fromtimestamp(float(e["accepted_at"]), tz=dt.UTC)))
    return keys


def _rebuild_state(
    *, player_id: int, profile: PlayerProfile, wallet: PlayerWallet, unflushed: list[dict[str, Any]]
) -> _RebuildState:
    letters = DeadLetter.objects.filter(player_id=player_id, resolved_at__isnull=True).values_list("payload", flat=True)
    dead = [e for e in map(counted_event, letters) if e is not None]
    candidates = {e["event_id"]: e for e in [*unflushed, *dead]}
    flushed_ids = {str(e) for e in selectors.ledger_events_written(_written_keys(player_id, candidates))}
    if unflushed:
        # A discarded event that Redis still holds (handed back by a rollback) counts no more.
        discarded = DeadLetter.objects.filter(event_id__in=[uuid.UUID(e["event_id"]) for e in unflushed])
        flushed_ids |= {str(e) for e in discarded.filter(resolution="discarded").values_list("event_id", flat=True)}
    pending = [e for i, e in candidates.items() if i not in flushed_ids]
    now = timezone.now()
    today = timezones.student_day(profile, now)
    xp_total = wallet.xp_total + sum(int(e["amount"]) for e in pending)
    streak = replay.streak_of(wallet)
    newest = max(pending, key=_event_order, default=None)
    if newest is not None and _event_order(newest) > (wallet.applied_generation, wallet.version):
        last_day = newest["last_day_after"]
        streak = rules.Streak(
            int(newest["streak_after"]),
            max(int(newest["longest_after"]), wallet.longest_streak),
            dt.date.fromisoformat(last_day) if last_day else None,
            int(newest["freezes_after"]),
            int(newest.get("break_after") or 0),
        )
    # The next Redis event must come after everything seen, in (generation, version) order: the
    # hash's generation is the database's, its version the highest seen.
    ver = max([wallet.version, *(int(e["version"]) for e in unflushed)])
    last = streak.last_day
    # Today's XP and lessons belong to the last activity day (the only day still open).
    open_day = last or today
    day_rows = LedgerEvent.objects.filter(player_id=player_id, local_day=open_day, kind=EventKind.LESSON)
    lessons = {row.lesson_id for row in day_rows.only("lesson_id", "amount") if row.lesson_id}
    xp_today = sum(row.amount for row in day_rows.only("lesson_id", "amount"))
    for e in pending:
        if e["kind"] == EventKind.LESSON and e["local_day"] == open_day.isoformat():
            xp_today += int(e["amount"])
            if e["lesson_id"]:
                lessons.add(e["lesson_id"])
    hashed = WalletHash(xp=xp_total, streak=streak, version=ver, day=open_day, xp_day=xp_today)
    records = {
        f"{digest.hex()}": cache.idem_record(
            fp=bytes(events[0].fp_digest or b"").hex(), answer=replay.Answer.from_rows(events).record()
        )
        for digest, events in replay.ledger_requests(player_id=player_id).items()
    }
    return _RebuildState(wallet=hashed, lessons=sorted(lessons), records=records)


def wallet_read(*, player_id: int, today: dt.date) -> dict[str, Any]:
    """The wallet as the student sees it: Redis on a warm cache, rebuilt on a cold one, the
    database when Redis is away."""
    try:
        if player_id in cache.stale_players:
            wallet_cache_sync_or_raise(player_id=player_id)
        data = cache.read_wallet(player_id)
        if data is None:
            wallet_cache_rebuild(player_id=player_id, force=True)
            data = cache.read_wallet(player_id)
    except hotstate.RedisUnavailable:
        data = None
    if data is None:
        wallet = PlayerWallet.objects.filter(player_id=player_id).first() or PlayerWallet(player_id=player_id)
        last_day = wallet.last_activity_date
        xp_today = replay.day_lessons(player_id=player_id, day=last_day)[0] if last_day and last_day >= today else 0
        streak = replay.streak_of(wallet)
        return replay.wallet_view(xp_total=wallet.xp_total, xp_today=xp_today, streak=streak, today=today)
    return replay.wallet_view(xp_total=data.xp, xp_today=data.xp_on(today), streak=data.streak, today=today)


# --- verification ---------------------------------------------------------------------------------
