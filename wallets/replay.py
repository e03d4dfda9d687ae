"""Answers rebuilt from the ledger: the wallet body of the API (from either copy), a replay's body
from its request's rows, a student's requests younger than the idempotency TTL, the local day."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from players import timezones
from players.models import PlayerProfile
from wallets import rules
from wallets.models import EventKind, LedgerEvent, PlayerWallet


def local_day_for(*, profile: PlayerProfile, at: dt.datetime) -> dt.date:
    return timezones.student_day(profile, at)


# --- awards ---------------------------------------------------------------------------------------


def streak_of(wallet: PlayerWallet) -> rules.Streak:
    return rules.Streak(
        wallet.current_streak,
        wallet.longest_streak,
        wallet.last_activity_date,
        wallet.streak_freezes,
        wallet.streak_before_break,
    )


def wallet_view(*, xp_total: int, xp_today: int, streak: rules.Streak, today: dt.date) -> dict[str, Any]:
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


def wallet_body(wallet: PlayerWallet, *, today: dt.date, xp_today: int) -> dict[str, Any]:
    return wallet_view(xp_total=wallet.xp_total, xp_today=xp_today, streak=streak_of(wallet), today=today)


def lesson_xp_today(*, player_id: int, day: dt.date) -> int:
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
    body["wallet"] = wallet_view(xp_total=after.xp_total_after, xp_today=xp_today, streak=streak, today=today)
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
