"""The XP and streak rules as plain Python: the database path applies them, the Lua award script
mirrors them, and the property tests hold both to a reference written from the design."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace

from django.conf import settings

# Matched whole (``fullmatch``): ``$`` would accept a trailing newline.
LESSON_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


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
    # The streak the last break reset (what support may restore); 0 when there is none.
    lost: int = 0


@dataclass(frozen=True)
class Activity:
    streak: Streak
    day: dt.date  # the day the activity counts for (a day before the last one counts as the last)
    frozen_days: list[dt.date] = field(default_factory=list)
    freeze_earned: bool = False


def streak_after_activity(streak: Streak, day: dt.date, *, every: int, max_freezes: int) -> Activity:
    """Activity on ``day``. Same day: no change; the next day: +1; a day before the last one (a
    westward move, clock skew) counts as the last day; a gap fully covered by held freezes consumes
    them and keeps the streak; any other gap resets it to 1 (the freezes are kept). Every
    ``every``-th streak day earns a freeze, up to ``max_freezes`` held."""
    last = streak.last_day
    if last is not None and day <= last:
        return Activity(streak, last)
    frozen: list[dt.date] = []
    current, freezes, lost = streak.current, streak.freezes, streak.lost
    if last is None:
        current = 1
    elif day == last + dt.timedelta(days=1):
        current += 1
    else:
        gap = (day - last).days - 1
        if gap <= freezes:
            frozen = [last + dt.timedelta(days=i) for i in range(1, gap + 1)]
            freezes -= gap
            current += 1
        else:
            lost = current
            current = 1
    earned = False
    if current > 1 and every > 0 and current % every == 0 and freezes < max_freezes:
        freezes += 1
        earned = True
    after = Streak(current, max(streak.longest, current), day, freezes, lost)
    return Activity(after, day, frozen, earned)


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


def streak_restore(streak: Streak, today: dt.date) -> Streak | None:
    """Put back the streak the last break reset (its value before the break plus the days kept
    since), or a lapsed streak not yet reset; None when there is nothing to restore."""
    yesterday = today - dt.timedelta(days=1)
    if streak.lost > 0:
        current = streak.lost + streak.current
        last = streak.last_day if streak.last_day and streak.last_day >= yesterday else yesterday
        return replace(streak, current=current, longest=max(streak.longest, current), last_day=last, lost=0)
    if streak.last_day is not None and streak.current > 0 and streak_shown(streak, today) == 0:
        return replace(streak, last_day=yesterday)
    return None
