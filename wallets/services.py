"""Awards: the Redis fast path (one Lua call, no database connection; Python renders the answer
the script returns) falling back on the database path (wallets.database_path) only when Redis
certainly did not run the award; the services behind the lesson, service-award and streak-restore
endpoints.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.utils import timezone

from core import hotstate, metrics
from core.errors import ApiError, rate_limited, service_unavailable, validation_error
from core.redisconn import IDENTITY
from players import timezones
from players.models import PlayerProfile
from wallets import cache, database_path, idempotency, replay, rules, sync
from wallets.awards import AwardOutcome, AwardRequest, key_reused, nothing_to_restore
from wallets.models import EventKind

__all__ = ["AwardOutcome", "AwardRequest", "wallet_award"]

logger = logging.getLogger(__name__)


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
        with database_path.key_in_flight(digest):
            return database_path.award_database(request=request, event_id=event_id)
    status = result[0]
    if status == "ok":
        metrics.AWARDS_CACHE.inc()
        return AwardOutcome(201, replay.Answer.from_record(result[1]).body(), replayed=False, path="cache")
    if status == "replay":
        return AwardOutcome(201, replay.Answer.from_record(result[1]).body(), replayed=True, path="cache")
    if status == "replay_body":
        # A record written before the script returned state: its body as it was.
        return AwardOutcome(int(result[1]), json.loads(result[2]), replayed=True, path="cache")
    if status == "conflict":
        raise key_reused()
    if status == "limited":
        raise rate_limited(int(result[1]) / 1000.0, scope="lessons_player")
    if status == "nothing":
        raise nothing_to_restore()
    raise RuntimeError(f"unexpected award result {status!r}")


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
            local_day=timezones.local_day(now, timezone_name),  # the zone: timezones.student_zone
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
            local_day=timezones.student_day(profile, timezone.now()),
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
    return wallet_award(
        request=AwardRequest(
            player_id=player_id,
            kind="restore",
            base_amount=0,
            local_day=timezones.student_day(profile, timezone.now()),
            idem_scope=idempotency.scope(caller=caller, endpoint="streak_restore", player_id=player_id),
            idem_key=idem_key,
            fingerprint=idempotency.fingerprint(
                method="POST", route="streak_restore", path_params={"player_id": player_id}, body={"reason": reason}
            ),
            reason=reason,
            actor=actor,
        )
    )
