"""Every change to wallets: awards (Redis fast path and database path), cache rebuilds, the flush.

Fast path: one Lua call per award, no database connection. Database path (Redis certainly did
not run the award): ledger + wallet in one transaction, the idempotency key unique in the ledger.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from core import hotstate, metrics, ratelimit
from core.errors import ApiError, rate_limited, service_unavailable, validation_error
from core.redisconn import IDENTITY
from players import timezones
from players.models import PlayerProfile
from wallets import cache, idempotency, rules, selectors
from wallets.events import counted_event
from wallets.models import DeadLetter, EventKind, LedgerEvent, PlayerWallet, WalletOutbox

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AwardRequest:
    player_id: int
    kind: str  # "lesson", "service" or "restore"
    base_amount: int
    local_day: dt.date
    idem_scope: str
    idem_key: str
    fingerprint: str
    lesson_id: str | None = None
    reason: str | None = None
    rate_limit: tuple[int, int] | None = None
    # (completions per local day, seconds until the local day ends): past it, 429, nothing written.
    daily_limit: tuple[int, float] | None = None
    actor: str = ""

    @property
    def idem_digest(self) -> str:
        return idempotency.key_digest(self.idem_scope, self.idem_key)

    @property
    def fp_digest(self) -> str:
        return idempotency.fingerprint_digest(self.fingerprint)


@dataclass(frozen=True)
class AwardOutcome:
    status: int
    body: dict[str, Any]
    replayed: bool
    path: str


def _reused() -> ApiError:
    return ApiError("idempotency_key_reused", "This Idempotency-Key was used for a different request.", status=422)


def _nothing_to_restore() -> ApiError:
    return ApiError(
        "validation_error",
        "Some fields are invalid.",
        status=400,
        errors={"player": ["This student has no broken streak to restore."]},
    )


def local_day_for(*, profile: PlayerProfile, at: dt.datetime) -> dt.date:
    return timezones.student_day(profile, at)


# --- awards ---------------------------------------------------------------------------------------


def wallet_award(*, request: AwardRequest) -> AwardOutcome:
    """Accept one award (or a streak restore): Redis first; the database only when Redis certainly
    did not run it."""
    now = time.time()
    event_id = str(uuid.uuid4())
    digest = request.idem_digest
    limit, window = request.rate_limit or (0, 1)
    daily_per_day, daily_retry = request.daily_limit or (0, 0.0)
    values = {
        "now": repr(now),
        "day": request.local_day.isoformat(),
        "day_ordinal": request.local_day.toordinal(),
        "kind": request.kind,
        "lesson_id": request.lesson_id or "",
        "base": request.base_amount,
        "cap": settings.MEMORA_XP_DAILY_CAP,
        "fp": request.fp_digest,
        "event_id": event_id,
        "rate_limit": limit,
        "rate_window_ms": window * 1000,
        "idem_ttl_ms": settings.MEMORA_IDEMPOTENCY_TTL * 1000,
        "player_id": request.player_id,
        "reason": request.reason or "",
        "idem": digest,
        "freeze_every": settings.MEMORA_STREAK_FREEZE_EVERY,
        "freeze_max": settings.MEMORA_STREAK_FREEZE_MAX,
        # Ids for the freeze events one call may add: up to the freezes held, plus one earned.
        "spare_ids": ",".join(str(uuid.uuid4()) for _ in range(settings.MEMORA_STREAK_FREEZE_MAX + 1)),
        "actor": request.actor,
        "identity": IDENTITY,
        "per_day": daily_per_day,
        "per_day_retry_ms": int(daily_retry * 1000),
    }
    try:
        if request.player_id in cache.stale_players:
            wallet_cache_sync_or_raise(player_id=request.player_id)
        for _attempt in range(3):
            result = cache.award(pid=request.player_id, idem_digest=digest, values=values)
            if result[0] not in ("cold", "suspect"):
                break
            # Absent, or stamped by another server identity (Redis went back in time): rebuilt
            # from the database and the events still pending.
            wallet_cache_rebuild(player_id=request.player_id, force=True)
        else:
            raise service_unavailable(1)
    except hotstate.RedisUnavailable as exc:
        if not exc.certainly_not_run:
            # Sent, maybe run: the client's retry with the same key settles it.
            raise service_unavailable(1) from exc
        with _key_in_flight(digest):
            return _award_database(request=request, event_id=event_id)
    status = result[0]
    if status == "ok":
        metrics.AWARDS_CACHE.inc()
        return AwardOutcome(201, json.loads(result[1]), replayed=False, path="cache")
    if status == "replay":
        return AwardOutcome(int(result[1]), json.loads(result[2]), replayed=True, path="cache")
    if status == "conflict":
        raise _reused()
    if status == "limited":
        raise rate_limited(int(result[1]) / 1000.0, scope="lessons_player")
    if status == "nothing":
        raise _nothing_to_restore()
    raise RuntimeError(f"unexpected award result {status!r}")


def _streak_of(wallet: PlayerWallet) -> rules.Streak:
    return rules.Streak(
        wallet.current_streak,
        wallet.longest_streak,
        wallet.last_activity_date,
        wallet.streak_freezes,
        wallet.streak_before_break,
    )


def _set_streak(wallet: PlayerWallet, streak: rules.Streak) -> None:
    wallet.current_streak = streak.current
    wallet.longest_streak = streak.longest
    wallet.last_activity_date = streak.last_day
    wallet.streak_freezes = streak.freezes
    wallet.streak_before_break = streak.lost


def _wallet_view(*, xp_total: int, xp_today: int, streak: rules.Streak, today: dt.date) -> dict[str, Any]:
    """The wallet body of the API, from either copy (Redis or the database)."""
    last = streak.last_day
    return {
        "xp_total": xp_total,
        "xp_today": xp_today,
        "current_streak": rules.streak_shown(streak, today),
        "longest_streak": streak.longest,
        "last_activity_date": last.isoformat() if last else None,
        "today": today.isoformat(),
        "streak_active_today": last is not None and last >= today,
        "streak_freezes": streak.freezes,
    }


def _wallet_body(wallet: PlayerWallet, *, today: dt.date, xp_today: int) -> dict[str, Any]:
    return _wallet_view(xp_total=wallet.xp_total, xp_today=xp_today, streak=_streak_of(wallet), today=today)


def _lesson_xp_today(*, player_id: int, day: dt.date) -> int:
    total = LedgerEvent.objects.filter(player_id=player_id, local_day=day, kind=EventKind.LESSON).aggregate(
        s=Sum("amount")
    )["s"]
    return int(total or 0)


FREEZE_KINDS = (EventKind.FREEZE_USED, EventKind.FREEZE_EARNED)


def replay_body(events: list[LedgerEvent], *, today: dt.date | None = None) -> dict[str, Any]:
    """The first answer to a request, rebuilt from its ledger rows (the main event and the freezes
    it used or earned): the ledger keeps what the body shows, not the body. ``today`` is the
    request's day; a replay takes the event's day (they differ only for a lesson sent on a day
    before the last activity day, after a westward timezone move, where `today` shows that day)."""
    main = next(e for e in events if e.kind not in FREEZE_KINDS)
    after = max(events, key=lambda e: (e.generation, e.version))
    today = today or main.local_day
    streak = rules.Streak(
        after.streak_after, after.longest_after, after.last_day_after, after.freezes_after, after.break_after
    )
    last = after.last_day_after
    xp_today = after.xp_day_after if last is not None and last >= today else 0
    body: dict[str, Any] = {"event_id": str(main.event_id)}
    if main.kind == EventKind.STREAK_RESTORED:
        body.update(kind=EventKind.STREAK_RESTORED.value, streak_before=main.streak_before or 0)
        body["streak_after"] = rules.streak_shown(streak, today)
    else:
        body["xp_awarded"] = main.amount
        if main.kind == EventKind.LESSON:
            body["capped"] = main.capped
    body["wallet"] = _wallet_view(xp_total=after.xp_total_after, xp_today=xp_today, streak=streak, today=today)
    return body


def ledger_requests(*, player_id: int, digests: list[bytes] | None = None) -> dict[bytes, list[LedgerEvent]]:
    """The student's requests younger than the idempotency TTL, by key digest (a key older than
    that is a new request on every path, as in Stripe's semantics)."""
    cutoff = timezone.now() - dt.timedelta(seconds=settings.MEMORA_IDEMPOTENCY_TTL)
    rows = LedgerEvent.objects.filter(player_id=player_id, accepted_at__gte=cutoff, idem_digest__isnull=False)
    if digests is not None:
        rows = rows.filter(idem_digest__in=digests)
    found: dict[bytes, list[LedgerEvent]] = {}
    for row in rows.order_by("id"):
        found.setdefault(bytes(row.idem_digest), []).append(row)
    return found


def _replay_from_ledger(request: AwardRequest) -> AwardOutcome | None:
    digest = idempotency.ledger_digest(request.idem_digest)
    events = ledger_requests(player_id=request.player_id, digests=[digest]).get(digest)
    if not events:
        return None
    if not idempotency.same_fingerprint(events[0].fp_digest, request.fp_digest):
        raise _reused()
    return AwardOutcome(201, replay_body(events), replayed=True, path="database")


@contextlib.contextmanager
def _key_in_flight(digest: str) -> Iterator[None]:
    """On the database path, a second request with a key whose first request is still running
    answers 409 (a MariaDB named lock; on the Redis path one Lua call leaves no such window)."""
    if connection.vendor != "mysql":
        yield
        return
    name = f"memora-idem-{digest}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT GET_LOCK(%s, 0)", [name])
        (acquired,) = cursor.fetchone()
    if acquired != 1:
        raise ApiError(
            "idempotency_in_progress", "The first request with this Idempotency-Key is still running.", status=409
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT RELEASE_LOCK(%s)", [name])


@transaction.atomic
def _award_database(*, request: AwardRequest, event_id: str) -> AwardOutcome:
    """Redis is away: judge the award from the database alone (pending Redis events are out of
    reach). Holds the student's wallet row lock, as every writer of their ledger rows does, so the
    idempotency lookup below is exact."""
    now = timezone.now()
    if request.rate_limit:
        limit, window = request.rate_limit
        verdict = ratelimit.local.hit(f"lesson:{request.player_id}", limit, window)
        if not verdict.allowed:
            raise rate_limited(verdict.retry_after, scope="lessons_player")
    PlayerWallet.objects.get_or_create(player_id=request.player_id)
    wallet = PlayerWallet.objects.select_for_update().get(player_id=request.player_id)
    replay = _replay_from_ledger(request)
    if replay is not None:
        return replay
    if request.daily_limit and request.kind == EventKind.LESSON:
        per_day, retry = request.daily_limit
        done = LedgerEvent.objects.filter(
            player_id=request.player_id, local_day=request.local_day, kind=EventKind.LESSON
        ).count()
        if done >= per_day:
            raise rate_limited(retry, scope="lessons_per_day")
    today = request.local_day
    amount = request.base_amount
    before = rules.streak_shown(_streak_of(wallet), today)
    # The events carry the generation this change bumps to: in (generation, version) order they
    # come after every Redis event computed from the copy this change makes stale.
    wallet.generation += 1
    wallet.applied_generation = wallet.generation
    idem = idempotency.ledger_digest(request.idem_digest)
    fp = idempotency.ledger_fp_digest(request.fp_digest)
    rows: list[LedgerEvent] = []
    xp_day = 0

    def add(kind: str, amount: int, day: dt.date, **extra: Any) -> LedgerEvent:
        wallet.version += 1
        row = LedgerEvent(
            event_id=uuid.UUID(extra.pop("event_id")) if "event_id" in extra else uuid.uuid4(),
            player_id=request.player_id,
            kind=kind,
            amount=amount,
            accepted_at=now + dt.timedelta(microseconds=len(rows)),
            local_day=day,
            idem_digest=idem,
            fp_digest=fp,
            generation=wallet.generation,
            version=wallet.version,
            xp_total_after=wallet.xp_total,
            xp_day_after=xp_day,
            streak_after=wallet.current_streak,
            longest_after=wallet.longest_streak,
            last_day_after=wallet.last_activity_date,
            freezes_after=wallet.streak_freezes,
            break_after=wallet.streak_before_break,
            actor=request.actor or None,
            **extra,
        )
        rows.append(row)
        return row

    if request.kind == EventKind.LESSON:
        activity = rules.streak_after_activity(
            _streak_of(wallet),
            today,
            every=settings.MEMORA_STREAK_FREEZE_EVERY,
            max_freezes=settings.MEMORA_STREAK_FREEZE_MAX,
        )
        day = activity.day
        new_day = wallet.last_activity_date is None or today > wallet.last_activity_date
        for frozen in activity.frozen_days:
            wallet.streak_freezes -= 1
            wallet.last_activity_date = frozen
            add(EventKind.FREEZE_USED, 0, frozen)
        repeat = (not new_day) and LedgerEvent.objects.filter(
            player_id=request.player_id, local_day=day, kind=EventKind.LESSON, lesson_id=request.lesson_id
        ).exists()
        earned_today = 0 if new_day else _lesson_xp_today(player_id=request.player_id, day=day)
        award = rules.apply_cap(base=amount, earned_today=earned_today, repeat=repeat, cap=settings.MEMORA_XP_DAILY_CAP)
        amount = award.amount
        xp_day = earned_today + amount
        wallet.xp_total += amount
        final = activity.streak
        _set_streak(wallet, replace(final, freezes=final.freezes - (1 if activity.freeze_earned else 0)))
        main = add(
            EventKind.LESSON,
            amount,
            day,
            event_id=event_id,
            lesson_id=request.lesson_id,
            capped=award.capped,
            reason=request.reason,
        )
        if activity.freeze_earned:
            _set_streak(wallet, final)
            add(EventKind.FREEZE_EARNED, 0, day)
    elif request.kind == "restore":
        restored = rules.streak_restore(_streak_of(wallet), today)
        if restored is None:
            raise _nothing_to_restore()
        _set_streak(wallet, restored)
        if wallet.last_activity_date is not None and wallet.last_activity_date >= today:
            xp_day = _lesson_xp_today(player_id=request.player_id, day=wallet.last_activity_date)
        main = add(EventKind.STREAK_RESTORED, 0, today, event_id=event_id, streak_before=before, reason=request.reason)
    else:
        wallet.xp_total += amount
        if wallet.last_activity_date is not None and wallet.last_activity_date >= today:
            xp_day = _lesson_xp_today(player_id=request.player_id, day=wallet.last_activity_date)
        main = add(request.kind, amount, today, event_id=event_id, reason=request.reason)
    del main
    LedgerEvent.objects.bulk_create(rows)
    wallet.save()
    WalletOutbox.objects.create(player_id=request.player_id, generation=wallet.generation, created_at=now)
    transaction.on_commit(lambda: wallet_cache_sync(player_id=request.player_id))
    transaction.on_commit(metrics.AWARDS_DATABASE.inc)
    return AwardOutcome(201, replay_body(rows, today=today), replayed=False, path="database")


# --- reading and rebuilding the Redis copy --------------------------------------------------------


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
            fields=state.fields,
            lessons=state.lessons,
            idem_records=state.records,
            idem_ttl_ms=settings.MEMORA_IDEMPOTENCY_TTL * 1000,
        )
        if written >= 0:
            return int(wallet.generation)
    raise hotstate.RedisUnavailable("wallet kept changing during the rebuild", certainly_not_run=True)


@dataclass(frozen=True)
class _RebuildState:
    fields: dict[str, str]
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
    today = local_day_for(profile=profile, at=now)
    xp_total = wallet.xp_total + sum(int(e["amount"]) for e in pending)
    state: dict[str, Any] = {
        "streak": wallet.current_streak,
        "longest": wallet.longest_streak,
        "last": wallet.last_activity_date,
        "freezes": wallet.streak_freezes,
        "brk": wallet.streak_before_break,
    }
    newest = max(pending, key=_event_order, default=None)
    if newest is not None and _event_order(newest) > (wallet.applied_generation, wallet.version):
        state.update(
            streak=int(newest["streak_after"]),
            longest=max(int(newest["longest_after"]), wallet.longest_streak),
            last=dt.date.fromisoformat(newest["last_day_after"]) if newest["last_day_after"] else None,
            freezes=int(newest["freezes_after"]),
            brk=int(newest.get("break_after") or 0),
        )
    # The next Redis event must come after everything seen, in (generation, version) order: the
    # hash's generation is the database's, its version the highest seen.
    ver = max([wallet.version, *(int(e["version"]) for e in unflushed)])
    last: dt.date | None = state["last"]
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
    fields = {
        "xp": str(xp_total),
        "streak": str(state["streak"]),
        "longest": str(state["longest"]),
        "last": str(last.toordinal()) if last else "",
        "lastd": last.isoformat() if last else "",
        "freezes": str(state["freezes"]),
        "brk": str(state["brk"]),
        "ver": str(ver),
        "day": open_day.isoformat(),
        "xpd": str(xp_today),
    }
    records = {
        f"{digest.hex()}": json.dumps(
            {"fp": bytes(events[0].fp_digest or b"").hex(), "status": 201, "body": json.dumps(replay_body(events))}
        )
        for digest, events in ledger_requests(player_id=player_id).items()
    }
    return _RebuildState(fields=fields, lessons=sorted(lessons), records=records)


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
        xp_today = _lesson_xp_today(player_id=player_id, day=last_day) if last_day and last_day >= today else 0
        return _wallet_body(wallet, today=today, xp_today=xp_today)
    last = dt.date.fromordinal(int(data["last"])) if data["last"] else None
    streak = rules.Streak(
        int(data["streak"] or 0), int(data["longest"] or 0), last, int(data["freezes"] or 0), int(data["brk"] or 0)
    )
    xp_today = int(data["xpd"] or 0) if data["day"] == today.isoformat() else 0
    return _wallet_view(xp_total=int(data["xp"] or 0), xp_today=xp_today, streak=streak, today=today)


# --- verification ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    player_id: int
    field: str
    wallet: Any
    ledger: Any


def _expected(player_id: int, *, total: int | None = None) -> dict[str, Any]:
    """What the student's ledger implies for their wallet row."""
    if total is None:
        total = LedgerEvent.objects.filter(player_id=player_id).aggregate(s=Sum("amount"))["s"]
    expected: dict[str, Any] = {"xp_total": int(total or 0)}
    newest = LedgerEvent.objects.filter(player_id=player_id).order_by("-generation", "-version", "-id").first()
    if newest is not None:
        expected.update(
            current_streak=newest.streak_after,
            last_activity_date=newest.last_day_after,
            streak_freezes=newest.freezes_after,
            streak_before_break=newest.break_after,
        )
    return expected


def _drifts(wallet: PlayerWallet, expected: dict[str, Any]) -> list[Drift]:
    return [
        Drift(wallet.player_id, name, getattr(wallet, name), value)
        for name, value in expected.items()
        if getattr(wallet, name) != value
    ]


def wallet_verify(*, fix: bool = False, player_ids: list[int] | None = None) -> list[Drift]:
    """Database wallets against what their ledgers imply; with ``fix``, correct them. A drift is
    recomputed and fixed inside the transaction that holds the wallet row lock, so a flush that
    commits between the first reads and the fix cannot be undone by an old total."""
    drifts: list[Drift] = []
    wallets = PlayerWallet.objects.all().order_by("player_id")
    if player_ids:
        wallets = wallets.filter(player_id__in=player_ids)
    totals = dict(
        LedgerEvent.objects.values("player_id").annotate(total=Sum("amount")).values_list("player_id", "total")
    )
    for wallet in wallets.iterator(chunk_size=2000):
        found = _drifts(wallet, _expected(wallet.player_id, total=int(totals.get(wallet.player_id) or 0)))
        if found and fix:
            with transaction.atomic():
                locked = PlayerWallet.objects.select_for_update().get(pk=wallet.pk)
                found = _drifts(locked, _expected(wallet.player_id))
                if found:
                    for drift in found:
                        setattr(locked, drift.field, drift.ledger)
                    locked.longest_streak = max(locked.longest_streak, locked.current_streak)
                    locked.generation += 1
                    locked.save()
                    WalletOutbox.objects.create(
                        player_id=wallet.player_id, generation=locked.generation, created_at=timezone.now()
                    )
                    pid = wallet.player_id
                    transaction.on_commit(lambda pid=pid: wallet_cache_sync(player_id=pid))  # type: ignore[misc]
        drifts += found
    return drifts


def wallet_lesson_complete(
    *, player_id: int, timezone_name: str, lesson_id: str, score: int | None, idem_key: str, body: dict[str, Any]
) -> AwardOutcome:
    """A student completed a lesson (the body already validated; it is the request's fingerprint)."""
    if not rules.LESSON_ID_RE.fullmatch(lesson_id):
        raise validation_error({"lesson_id": ["1-64 characters: letters, digits, '_', '.', '-'."]})
    now = timezone.now()
    day_ends_in = (timezones.next_local_midnight(now, timezone_name) - now).total_seconds()
    per_day = settings.MEMORA_LESSONS_PER_DAY
    return wallet_award(
        request=AwardRequest(
            player_id=player_id,
            kind=EventKind.LESSON,
            base_amount=rules.lesson_base_xp(score),
            local_day=timezones.local_day(now, timezone_name),
            idem_scope=idempotency.scope(caller=f"p:{player_id}", endpoint="lesson_complete", player_id=player_id),
            idem_key=idem_key,
            fingerprint=idempotency.fingerprint(
                method="POST", route="lesson_complete", path_params={"lesson_id": lesson_id}, body=body
            ),
            lesson_id=lesson_id,
            rate_limit=settings.MEMORA_RATE_LESSONS_PLAYER,
            daily_limit=(per_day, day_ends_in) if per_day > 0 else None,
        )
    )


def wallet_service_award(
    *, caller_id: int, player_id: int, amount: int, reason: str, idem_key: str, body: dict[str, Any]
) -> AwardOutcome:
    """A service grants XP (not capped, not streak activity)."""
    profile = PlayerProfile.objects.filter(pk=player_id).first()
    if profile is None:
        raise validation_error({"player": ["No such player."]})
    return wallet_award(
        request=AwardRequest(
            player_id=player_id,
            kind=EventKind.SERVICE,
            base_amount=amount,
            local_day=local_day_for(profile=profile, at=timezone.now()),
            idem_scope=idempotency.scope(caller=f"k:{caller_id}", endpoint="wallet_award_xp", player_id=player_id),
            idem_key=idem_key,
            fingerprint=idempotency.fingerprint(method="POST", route="wallet_award_xp", path_params={}, body=body),
            reason=reason,
        )
    )


def wallet_restore_streak(*, player_id: int, reason: str, caller: str, idem_key: str, actor: str) -> AwardOutcome:
    """Support puts back the streak the last break reset: a ``streak_restored`` ledger event
    through the award path, audited by its actor, reason and the streak before and after."""
    profile = PlayerProfile.objects.filter(pk=player_id).first()
    if profile is None:
        raise ApiError("not_found", "No such player.", status=404)
    from wallets import idempotency

    return wallet_award(
        request=AwardRequest(
            player_id=player_id,
            kind="restore",
            base_amount=0,
            local_day=local_day_for(profile=profile, at=timezone.now()),
            idem_scope=idempotency.scope(caller=caller, endpoint="streak_restore", player_id=player_id),
            idem_key=idem_key,
            fingerprint=idempotency.fingerprint(
                method="POST", route="streak_restore", path_params={"player_id": player_id}, body={"reason": reason}
            ),
            reason=reason,
            actor=actor,
        )
    )
