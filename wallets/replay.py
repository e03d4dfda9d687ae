"""Every answer of an award, rendered once: :class:`Answer` (the request's main event and the
wallet after it) to the response body, whichever path ran it (the Redis script returns an
answer's record, the database path and a replay from the ledger build one); the wallet body of
the API; a student's requests younger than the idempotency TTL."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from wallets import rules
from wallets.models import EventKind, LedgerEvent, PlayerWallet

FREEZE_KINDS = (EventKind.FREEZE_USED, EventKind.FREEZE_EARNED)


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


def state_view(state: rules.WalletState, today: dt.date) -> dict[str, Any]:
    """The wallet body of a rules state: the day's XP shows on its day (or before it)."""
    last = state.streak.last_day
    xp_today = state.xp_day if last is not None and last >= today else 0
    return wallet_view(xp_total=state.xp, xp_today=xp_today, streak=state.streak, today=today)


def streak_of(wallet: PlayerWallet) -> rules.Streak:
    return rules.Streak(
        wallet.current_streak,
        wallet.longest_streak,
        wallet.last_activity_date,
        wallet.streak_freezes,
        wallet.streak_lost,
    )


def day_lessons(*, player_id: int, day: dt.date | None) -> tuple[int, set[str]]:
    """The lesson XP and the lessons done on one day, from the ledger."""
    if day is None:
        return 0, set()
    rows = LedgerEvent.objects.filter(player_id=player_id, local_day=day, kind=EventKind.LESSON)
    xp, lessons = 0, set()
    for amount, lesson_id in rows.values_list("amount", "lesson_id"):
        xp += amount
        if lesson_id:
            lessons.add(lesson_id)
    return xp, lessons


def wallet_state(wallet: PlayerWallet) -> rules.WalletState:
    """The database's wallet as the rules see it (its row and its last day's ledger rows)."""
    xp_day, lessons = day_lessons(player_id=wallet.player_id, day=wallet.last_activity_date)
    return rules.WalletState(wallet.xp_total, streak_of(wallet), xp_day, frozenset(lessons))


# The separator of an answer's record (none of its values contains it).
_SEP = ","


@dataclass(frozen=True)
class Answer:
    """What the answer to an award shows: its main event and the wallet after its request, on the
    day it was sent. Stored in the idempotency record as :meth:`record`, the string the award
    script writes (wallets/lua/award.lua mirrors its field order)."""

    event_id: str
    kind: str  # the main event's: lesson, service or streak_restored
    amount: int
    capped: bool
    streak_before: int | None
    today: dt.date
    after: rules.WalletState

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"event_id": self.event_id}
        if self.kind == EventKind.STREAK_RESTORED:
            body["kind"] = EventKind.STREAK_RESTORED.value
            body["streak_before"] = self.streak_before or 0
            body["streak_after"] = rules.streak_shown(self.after.streak, self.today)
        else:
            body["xp_awarded"] = self.amount
            if self.kind == EventKind.LESSON:
                body["capped"] = self.capped
        body["wallet"] = state_view(self.after, self.today)
        return body

    def record(self) -> str:
        s = self.after.streak
        before = "" if self.streak_before is None else str(self.streak_before)
        last = s.last_day.isoformat() if s.last_day else ""
        values = (self.event_id, self.kind, self.amount, int(self.capped), before, self.today.isoformat())
        state = (self.after.xp, self.after.xp_day, s.current, s.longest, last, s.freezes, s.streak_lost)
        return _SEP.join(map(str, values + state))

    @classmethod
    def from_record(cls, record: str) -> Answer:
        event_id, kind, amount, capped, before, today, xp, xp_day, current, longest, last, freezes, lost = record.split(
            _SEP
        )
        streak = rules.Streak(
            int(current), int(longest), dt.date.fromisoformat(last) if last else None, int(freezes), int(lost)
        )
        return cls(
            event_id,
            kind,
            int(amount),
            capped == "1",
            int(before) if before else None,
            dt.date.fromisoformat(today),
            rules.WalletState(int(xp), streak, int(xp_day)),
        )

    @classmethod
    def from_rows(cls, events: list[LedgerEvent], *, today: dt.date | None = None) -> Answer:
        """A request's answer from its ledger rows (the main event and the freezes it used or
        earned): the ledger keeps what the body shows, not the body. ``today`` is the request's
        day; a replay takes the event's day (they differ only for a lesson sent on a day before
        the last activity day, after a westward timezone move, where ``today`` shows that day)."""
        main = next(e for e in events if e.kind not in FREEZE_KINDS)
        after = max(events, key=lambda e: (e.generation, e.version))
        streak = rules.Streak(
            after.streak_after, after.longest_after, after.last_day_after, after.freezes_after, after.streak_lost_after
        )
        state = rules.WalletState(after.xp_total_after, streak, after.xp_day_after)
        today = today or main.local_day
        return cls(str(main.event_id), main.kind, main.amount, main.capped, main.streak_before, today, state)


def replay_body(events: list[LedgerEvent], *, today: dt.date | None = None) -> dict[str, Any]:
    """The first answer to a request, rebuilt from its ledger rows (see :meth:`Answer.from_rows`)."""
    return Answer.from_rows(events, today=today).body()


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
