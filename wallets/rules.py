"""The XP and streak rules as one pure function, :func:`apply`: (state, request) -> (state,
events, outcome), no I/O. The database path applies it; the Lua award script (which must run them
atomically inside Redis) mirrors it, and the property tests hold the script to it.

The rule numbers are a :class:`Numbers` (from settings by the caller, or built by a test).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace

from django.conf import settings

# Matched whole (``fullmatch``): ``$`` would accept a trailing newline.
LESSON_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# The kinds of request (a restore is a support action, its event is ``streak_restored``) and of
# ledger event. Plain strings, the values of ``wallets.models.EventKind``.
LESSON, SERVICE, RESTORE = "lesson", "service", "restore"
FREEZE_USED, FREEZE_EARNED, STREAK_RESTORED = "freeze_used", "freeze_earned", "streak_restored"


@dataclass(frozen=True)
class Numbers:
    """The product's rule numbers (settings ``MEMORA_XP_*`` and ``MEMORA_STREAK_FREEZE_*``)."""

    lesson_base: int = 10
    perfect_bonus: int = 5
    daily_cap: int = 200
    freeze_every: int = 7
    freeze_max: int = 2

    @classmethod
    def from_settings(cls) -> Numbers:
        return cls(
            lesson_base=settings.MEMORA_XP_LESSON_BASE,
            perfect_bonus=settings.MEMORA_XP_PERFECT_BONUS,
            daily_cap=settings.MEMORA_XP_DAILY_CAP,
            freeze_every=settings.MEMORA_STREAK_FREEZE_EVERY,
            freeze_max=settings.MEMORA_STREAK_FREEZE_MAX,
        )


def lesson_base_xp(score: int | None, numbers: Numbers | None = None) -> int:
    """A lesson's XP before the daily cap: the base, plus the bonus for a perfect score."""
    numbers = numbers or Numbers.from_settings()
    return numbers.lesson_base + (numbers.perfect_bonus if score == 100 else 0)


@dataclass(frozen=True)
class Streak:
    current: int = 0
    longest: int = 0
    last_day: dt.date | None = None
    freezes: int = 0
    # The streak the last break reset (what support may restore); 0 when there is none. Stored as
    # the wallet column ``streak_before_break``, the Redis field ``brk`` and the event key / ledger
    # column ``break_after`` (wallets.wallethash.WALLET_HASH_FIELDS documents every stored name).
    streak_lost: int = 0


@dataclass(frozen=True)
class WalletState:
    """A student's wallet as the rules see it. ``xp_day`` and ``lessons`` belong to the last
    activity day (the only day still open): its lesson XP and the lessons done on it."""

    xp: int = 0
    streak: Streak = field(default_factory=Streak)
    xp_day: int = 0
    lessons: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Request:
    kind: str  # LESSON, SERVICE or RESTORE
    day: dt.date  # the student's local day when it was sent
    amount: int = 0  # a lesson's XP before the cap (lesson_base_xp), a service award's XP
    lesson_id: str = ""


@dataclass(frozen=True)
class Event:
    """One ledger event and the wallet after it."""

    kind: str
    amount: int
    day: dt.date
    after: WalletState
    main: bool = False  # the request's own event (not a freeze it used or earned)
    lesson_id: str = ""
    capped: bool = False
    streak_before: int | None = None  # a restore's: the streak shown before it


@dataclass(frozen=True)
class Outcome:
    awarded: int = 0
    capped: bool = False
    streak_before: int | None = None  # a restore's
    nothing_to_restore: bool = False


def streak_shown(streak: Streak, today: dt.date) -> int:
    """A streak whose last day is before yesterday reads as 0, unless held freezes cover the gap."""
    last = streak.last_day
    if last is None:
        return 0
    if last >= today - dt.timedelta(days=1):
        return streak.current
    if (today - last).days - 1 <= streak.freezes:
        return streak.current
    return 0


def apply(state: WalletState, request: Request, numbers: Numbers) -> tuple[WalletState, list[Event], Outcome]:
    """One request against the wallet: the wallet after it, its ledger events (in order, each with
    the wallet after it) and what the answer reports."""
    if request.kind == LESSON:
        return _lesson(state, request, numbers)
    if request.kind == RESTORE:
        return _restore(state, request)
    after = replace(state, xp=state.xp + request.amount)
    main = Event(request.kind, request.amount, request.day, after, main=True)
    return after, [main], Outcome(awarded=request.amount)


def _lesson(state: WalletState, request: Request, numbers: Numbers) -> tuple[WalletState, list[Event], Outcome]:
    """Same day: no streak change; the next day: +1; a day before the last one (a westward move,
    clock skew) counts as the last day; a gap fully covered by held freezes consumes them (one
    ``freeze_used`` event per day) and keeps the streak; any other gap resets it to 1 (the freezes
    are kept, the streak lost remembered). Every ``freeze_every``-th streak day earns a freeze, up
    to ``freeze_max`` held (a ``freeze_earned`` event after the lesson's). The same lesson again
    on the day earns 0; otherwise the XP is cut to what the daily cap leaves."""
    events: list[Event] = []
    s = state.streak
    earned = False
    if s.last_day is None or request.day > s.last_day:
        current, freezes, lost = s.current, s.freezes, s.streak_lost
        if s.last_day is None:
            current = 1
        elif request.day == s.last_day + dt.timedelta(days=1):
            current += 1
        else:
            gap = (request.day - s.last_day).days - 1
            if gap <= freezes:
                for i in range(1, gap + 1):
                    freezes -= 1
                    frozen_day = s.last_day + dt.timedelta(days=i)
                    frozen = WalletState(state.xp, replace(s, last_day=frozen_day, freezes=freezes))
                    events.append(Event(FREEZE_USED, 0, frozen_day, frozen))
                current += 1
            else:
                lost, current = current, 1
        earned = current > 1 and numbers.freeze_every > 0 and current % numbers.freeze_every == 0
        earned = earned and freezes < numbers.freeze_max
        s = Streak(current, max(s.longest, current), request.day, freezes, lost)
        state = WalletState(state.xp, s, 0, frozenset())
    day = s.last_day or request.day
    amount, capped = request.amount, False
    if request.lesson_id in state.lessons:
        amount = 0
    else:
        left = max(numbers.daily_cap - state.xp_day, 0)
        if amount > left:
            amount, capped = left, True
    state = WalletState(state.xp + amount, s, state.xp_day + amount, state.lessons | {request.lesson_id})
    events.append(Event(LESSON, amount, day, state, main=True, lesson_id=request.lesson_id, capped=capped))
    if earned:
        state = replace(state, streak=replace(s, freezes=s.freezes + 1))
        events.append(Event(FREEZE_EARNED, 0, day, state))
    return state, events, Outcome(awarded=amount, capped=capped)


def _restore(state: WalletState, request: Request) -> tuple[WalletState, list[Event], Outcome]:
    """Put back the streak the last break reset (its value before the break plus the days kept
    since), or a lapsed streak not yet reset. A last day moved to yesterday has no lessons."""
    s, today = state.streak, request.day
    yesterday = today - dt.timedelta(days=1)
    before = streak_shown(s, today)
    if s.streak_lost > 0:
        current = s.streak_lost + s.current
        restored = replace(s, current=current, longest=max(s.longest, current), streak_lost=0)
    elif s.last_day is not None and s.current > 0 and before == 0:
        restored = s
    else:
        return state, [], Outcome(nothing_to_restore=True)
    after = replace(state, streak=restored)
    if restored.last_day is None or restored.last_day < yesterday:
        after = WalletState(state.xp, replace(restored, last_day=yesterday), 0, frozenset())
    main = Event(STREAK_RESTORED, 0, today, after, main=True, streak_before=before)
    return after, [main], Outcome(streak_before=before)
