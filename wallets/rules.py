"""The XP and streak rules as plain Python: the database path applies them, the Lua award script
mirrors them, and the property tests hold both to them."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace

from django.conf import settings

LESSON_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def lesson_base_xp(score: int | None) -> int:
    bonus = settings.MEMORA_XP_PERFECT_BONUS if score == 100 else 0
    return int(settings.MEMORA_XP_LESSON_BASE + bonus)


@dataclass(frozen=True)
class LessonAward:
    amount: int
    capped: bool


def apply_cap(*, base: int, earned_today: int, repeat: bool, cap: int) -> LessonAward:
    """Same lesson on the same day: 0. Otherwise cut to what is left of the daily cap."""
    if repeat:
        return LessonAward(0, False)
    left = max(cap - earned_today, 0)
    if base > left:
        return LessonAward(left, True)
    return LessonAward(base, False)


@dataclass(frozen=True)
class Streak:
    current: int = 0
    longest: int = 0
    last_day: dt.date | None = None
    freezes: int = 0


def streak_after_activity(streak: Streak, day: dt.date) -> Streak:
    """Activity on ``day``: same day no change; the next day +1; an earlier day (a westward move,
    clock skew) is treated as the last day; a gap resets to 1."""
    last = streak.last_day
    if last is None:
        current = 1
        last = day
    elif day <= last:
        return streak
    elif day == last + dt.timedelta(days=1):
        current = streak.current + 1
        last = day
    else:
        current = 1
        last = day
    return replace(streak, current=current, longest=max(streak.longest, current), last_day=last)


def streak_shown(streak: Streak, today: dt.date) -> int:
    """A streak whose last day is before yesterday reads as 0."""
    if streak.last_day is None or streak.last_day < today - dt.timedelta(days=1):
        return 0
    return streak.current
