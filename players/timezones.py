"""IANA time zones and local days."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from functools import lru_cache
from typing import Protocol


@lru_cache(maxsize=1)
def known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_known(name: str) -> bool:
    return name in known_timezones()


@lru_cache(maxsize=1024)
def zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def effective(tz_name: str, pending: str, effective_at: dt.datetime | None, at: dt.datetime) -> str:
    """The zone in force at ``at``: a pending change applies from its local midnight on."""
    if pending and effective_at is not None and at >= effective_at:
        return pending
    return tz_name


def local_day(at: dt.datetime, tz_name: str) -> dt.date:
    return at.astimezone(zone(tz_name)).date()


class HasTimezone(Protocol):
    """A student's zone settings: the profile, or the verified principal of a request."""

    @property
    def timezone(self) -> str: ...

    @property
    def timezone_pending(self) -> str: ...

    @property
    def timezone_effective_at(self) -> dt.datetime | None: ...


def student_zone(student: HasTimezone, at: dt.datetime) -> str:
    return effective(student.timezone, student.timezone_pending, student.timezone_effective_at, at)


def student_day(student: HasTimezone, at: dt.datetime) -> dt.date:
    """The student's local day at ``at``: the one rule for every "today" (a pending zone change
    counts from its local midnight on)."""
    return local_day(at, student_zone(student, at))


def next_local_midnight(at: dt.datetime, tz_name: str) -> dt.datetime:
    """The first instant of the next local day, in UTC (a DST gap at midnight moves it forward)."""
    tz = zone(tz_name)
    tomorrow = at.astimezone(tz).date() + dt.timedelta(days=1)
    naive = dt.datetime.combine(tomorrow, dt.time(0, 0))
    # fold=0 and a round trip through UTC resolve a nonexistent midnight to the instant after it.
    local = naive.replace(tzinfo=tz)
    return local.astimezone(dt.UTC)
