"""The database path of an award (Redis certainly did not run it): the rules applied to the
wallet row and its last day's ledger rows, the events written as ledger rows, the wallet row
updated, all in one transaction holding the wallet row lock."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator

from django.db import connection, transaction
from django.utils import timezone

from core import metrics, ratelimit
from core.errors import ApiError, rate_limited
from wallets import idempotency, replay, rules, sync
from wallets.awards import AwardOutcome, AwardRequest, key_reused, nothing_to_restore
from wallets.models import EventKind, LedgerEvent, PlayerWallet, WalletOutbox


@contextlib.contextmanager
def key_in_flight(digest: str) -> Iterator[None]:
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


def _replay_from_ledger(request: AwardRequest) -> AwardOutcome | None:
    digest = idempotency.ledger_digest(request.idem_digest)
    events = replay.ledger_requests(player_id=request.player_id, digests=[digest]).get(digest)
    if not events:
        return None
    if not idempotency.same_fingerprint(events[0].fp_digest, request.fp_digest):
        raise key_reused()
    return AwardOutcome(201, replay.replay_body(events), replayed=True, path="database")


@transaction.atomic
def award_database(*, request: AwardRequest, event_id: str) -> AwardOutcome:
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
    asked = rules.Request(request.kind, request.local_day, request.base_amount, request.lesson_id or "")
    after, events, outcome = rules.apply(replay.wallet_state(wallet), asked, rules.Numbers.from_settings())
    if outcome.nothing_to_restore:
        raise nothing_to_restore()
    # The events carry the generation this change bumps to: in (generation, version) order they
    # come after every Redis event computed from the copy this change makes stale.
    wallet.generation += 1
    wallet.applied_generation = wallet.generation
    LedgerEvent.objects.bulk_create(_ledger_rows(events, request=request, event_id=event_id, now=now, wallet=wallet))
    s = after.streak
    wallet.xp_total, wallet.version = after.xp, wallet.version + len(events)
    wallet.current_streak, wallet.longest_streak, wallet.last_activity_date = s.current, s.longest, s.last_day
    wallet.streak_freezes, wallet.streak_lost = s.freezes, s.streak_lost
    wallet.save()
    WalletOutbox.objects.create(player_id=request.player_id, generation=wallet.generation, created_at=now)
    transaction.on_commit(lambda: sync.wallet_cache_sync(player_id=request.player_id))
    transaction.on_commit(metrics.AWARDS_DATABASE.inc)
    main = next(e for e in events if e.main)
    answer = replay.Answer(
        event_id, main.kind, outcome.awarded, outcome.capped, outcome.streak_before, request.local_day, after
    )
    return AwardOutcome(201, answer.body(), replayed=False, path="database")


def _ledger_rows(
    events: list[rules.Event], *, request: AwardRequest, event_id: str, now: dt.datetime, wallet: PlayerWallet
) -> list[LedgerEvent]:
    """The request's events as ledger rows: a microsecond apart, in order, each with the wallet
    after it and the request's key and fingerprint digests."""
    idem = idempotency.ledger_digest(request.idem_digest)
    fp = idempotency.ledger_fp_digest(request.fp_digest)
    rows = []
    for i, e in enumerate(events):
        s = e.after.streak
        rows.append(
            LedgerEvent(
                event_id=uuid.UUID(event_id) if e.main else uuid.uuid4(),
                player_id=request.player_id,
                kind=e.kind,
                amount=e.amount,
                lesson_id=e.lesson_id or None,
                reason=request.reason if e.main else None,
                accepted_at=now + dt.timedelta(microseconds=i),
                local_day=e.day,
                idem_digest=idem,
                fp_digest=fp,
                generation=wallet.generation,
                version=wallet.version + i + 1,
                xp_total_after=e.after.xp,
                xp_day_after=e.after.xp_day,
                capped=e.capped,
                streak_after=s.current,
                longest_after=s.longest,
                last_day_after=s.last_day,
                freezes_after=s.freezes,
                streak_lost_after=s.streak_lost,
                streak_before=e.streak_before,
                actor=request.actor or None,
            )
        )
    return rows
