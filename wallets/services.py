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
from django.utils import timezone

from core import hotstate, metrics, ratelimit
from core.errors import ApiError, rate_limited, service_unavailable, validation_error
from core.redisconn import IDENTITY
from players import timezones
from players.models import PlayerProfile
from wallets import cache, idempotency, replay, rules, sync
from wallets.models import EventKind, LedgerEvent, PlayerWallet, WalletOutbox

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
            sync.wallet_cache_sync_or_raise(player_id=request.player_id)
        for _attempt in range(3):
            result = cache.award(pid=request.player_id, idem_digest=digest, values=values)
            if result[0] not in ("cold", "suspect"):
                break
            # Absent, or stamped by another server identity (Redis went back in time): rebuilt
            # from the database and the events still pending.
            sync.wallet_cache_rebuild(player_id=request.player_id, force=True)
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


def _set_streak(wallet: PlayerWallet, streak: rules.Streak) -> None:
    wallet.current_streak = streak.current
    wallet.longest_streak = streak.longest
    wallet.last_activity_date = streak.last_day
    wallet.streak_freezes = streak.freezes
    wallet.streak_before_break = streak.lost


def _replay_from_ledger(request: AwardRequest) -> AwardOutcome | None:
    digest = idempotency.ledger_digest(request.idem_digest)
    events = replay.ledger_requests(player_id=request.player_id, digests=[digest]).get(digest)
    if not events:
        return None
    if not idempotency.same_fingerprint(events[0].fp_digest, request.fp_digest):
        raise _reused()
    return AwardOutcome(201, replay.replay_body(events), replayed=True, path="database")


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
    previous = _replay_from_ledger(request)
    if previous is not None:
        return previous
    if request.daily_limit and request.kind == EventKind.LESSON:
        per_day, retry = request.daily_limit
        done = LedgerEvent.objects.filter(
            player_id=request.player_id, local_day=request.local_day, kind=EventKind.LESSON
        ).count()
        if done >= per_day:
            raise rate_limited(retry, scope="lessons_per_day")
    today = request.local_day
    amount = request.base_amount
    before = rules.streak_shown(replay.streak_of(wallet), today)
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
            replay.streak_of(wallet),
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
        earned_today = 0 if new_day else replay.lesson_xp_today(player_id=request.player_id, day=day)
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
        restored = rules.streak_restore(replay.streak_of(wallet), today)
        if restored is None:
            raise _nothing_to_restore()
        _set_streak(wallet, restored)
        if wallet.last_activity_date is not None and wallet.last_activity_date >= today:
            xp_day = replay.lesson_xp_today(player_id=request.player_id, day=wallet.last_activity_date)
        main = add(EventKind.STREAK_RESTORED, 0, today, event_id=event_id, streak_before=before, reason=request.reason)
    else:
        wallet.xp_total += amount
        if wallet.last_activity_date is not None and wallet.last_activity_date >= today:
            xp_day = replay.lesson_xp_today(player_id=request.player_id, day=wallet.last_activity_date)
        main = add(request.kind, amount, today, event_id=event_id, reason=request.reason)
    del main
    LedgerEvent.objects.bulk_create(rows)
    wallet.save()
    WalletOutbox.objects.create(player_id=request.player_id, generation=wallet.generation, created_at=now)
    transaction.on_commit(lambda: sync.wallet_cache_sync(player_id=request.player_id))
    transaction.on_commit(metrics.AWARDS_DATABASE.inc)
    return AwardOutcome(201, replay.replay_body(rows, today=today), replayed=False, path="database")


# --- reading and rebuilding the Redis copy --------------------------------------------------------


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
            local_day=replay.local_day_for(profile=profile, at=timezone.now()),
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
            local_day=replay.local_day_for(profile=profile, at=timezone.now()),
            idem_scope=idempotency.scope(caller=caller, endpoint="streak_restore", player_id=player_id),
            idem_key=idem_key,
            fingerprint=idempotency.fingerprint(
                method="POST", route="streak_restore", path_params={"player_id": player_id}, body={"reason": reason}
            ),
            reason=reason,
            actor=actor,
        )
    )
