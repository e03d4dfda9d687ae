"""Property tests: random activity times and time zones (DST boundaries included) against a
plain reference implementation of the design's XP and streak rules, on the Redis path (the Lua
award script) and on the database path. test_rules_properties.py holds the script to
``rules.apply`` over every kind of request."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from players import timezones
from players.tests.factories import PlayerFactory
from wallets import flush, rules, services, sync, verification
from wallets.models import EventKind, LedgerEvent

pytestmark = pytest.mark.django_db

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Paris",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "Asia/Kolkata",
    "America/St_Johns",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
]
# Days around 2026's DST changes in the zones above.
STARTS = [dt.datetime(2026, m, d, 12, tzinfo=dt.UTC) for m, d in ((3, 7), (3, 28), (4, 4), (9, 26), (10, 24), (10, 31))]

Activity = tuple[int, str, str, int | None]  # minutes after the previous one, zone, lesson, score

activities = st.lists(
    st.tuples(
        st.one_of(st.integers(min_value=0, max_value=3 * 24 * 60), st.sampled_from([24 * 60] * 6 + [2 * 24 * 60])),
        st.sampled_from(ZONES),
        st.sampled_from(["a", "b", "c", "algebra-1"]),
        st.sampled_from([None, 50, 100]),
    ),
    min_size=1,
    max_size=40,
)

# The same examples on every run (CI stays stable); no example database.
STABLE = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture],
}


class Reference:
    """The design's rules written plainly, day by day (freezes: one earned every EVERY streak days,
    at most MAX held, consumed only by a gap they fully cover)."""

    EVERY = 7
    MAX = 2

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.xp = 0
        self.current = 0
        self.longest = 0
        self.freezes = 0
        self.last: dt.date | None = None
        self.earned: dict[dt.date, int] = {}
        self.done: dict[dt.date, set[str]] = {}
        self.frozen_days: list[dt.date] = []
        self.freezes_earned = 0

    def lesson(self, day: dt.date, lesson: str, score: int | None) -> tuple[int, bool]:
        if self.last is not None and day < self.last:
            day = self.last  # D < L is treated as L
        if self.last is None:
            self.current = 1
        elif day == self.last + dt.timedelta(days=1):
            self.current += 1
        elif day > self.last + dt.timedelta(days=1):
            missed = [self.last + dt.timedelta(days=i) for i in range(1, (day - self.last).days)]
            if len(missed) <= self.freezes:
                self.freezes -= len(missed)
                self.frozen_days += missed
                self.current += 1
            else:
                self.current = 1
        if day != self.last and self.current > 1 and self.current % self.EVERY == 0 and self.freezes < self.MAX:
            self.freezes += 1
            self.freezes_earned += 1
        self.last = max(self.last or day, day)
        self.longest = max(self.longest, self.current)
        base = 15 if score == 100 else 10
        done = self.done.setdefault(day, set())
        if lesson in done:
            return 0, False
        done.add(lesson)
        left = max(self.cap - self.earned.get(day, 0), 0)
        amount = min(base, left)
        self.earned[day] = self.earned.get(day, 0) + amount
        self.xp += amount
        return amount, base > left

    def shown(self, today: dt.date) -> dict[str, object]:
        if self.last is None:
            current = 0
        elif self.last >= today - dt.timedelta(days=1) or (today - self.last).days - 1 <= self.freezes:
            current = self.current
        else:
            current = 0
        return {
            "xp_total": self.xp,
            # A day before the last one is treated as the last: its XP is that day's.
            "xp_today": self.earned.get(self.last, 0) if self.last is not None and self.last >= today else 0,
            "current_streak": current,
            "longest_streak": self.longest,
            "last_activity_date": self.last.isoformat() if self.last else None,
            "today": today.isoformat(),
            "streak_active_today": self.last is not None and self.last >= today,
            "streak_freezes": self.freezes,
        }


def run_against_reference(steps: list[Activity], start: dt.datetime, cap: int) -> None:
    profile = PlayerFactory()
    reference = Reference(cap)
    at = start
    for minutes, zone, lesson, score in steps:
        at += dt.timedelta(minutes=minutes)
        day = timezones.local_day(at, zone)
        outcome = services.wallet_award(
            request=services.AwardRequest(
                player_id=profile.pk,
                kind=EventKind.LESSON,
                base_amount=rules.lesson_base_xp(score),
                local_day=day,
                idem_scope=f"p:{profile.pk}|lesson_complete|{profile.pk}",
                idem_key=uuid.uuid4().hex,
                fingerprint=uuid.uuid4().hex,
                lesson_id=lesson,
            )
        )
        amount, capped = reference.lesson(day, lesson, score)
        assert (outcome.body["xp_awarded"], outcome.body["capped"]) == (amount, capped)
        assert outcome.body["wallet"] == reference.shown(day)
    # Read back later, possibly after the streak lapsed (or while freezes still cover the gap).
    for later in (0, 1, 2, 3, 5):
        today = reference.last + dt.timedelta(days=later) if reference.last else day
        assert sync.wallet_read(player_id=profile.pk, today=today) == reference.shown(today)
    # Every freeze earned and used is a 0-XP ledger event: flushed, and the wallet agrees.
    flush.wallet_flush(player_ids=[profile.pk], trigger="manual")
    used = LedgerEvent.objects.filter(player_id=profile.pk, kind=EventKind.FREEZE_USED)
    assert sorted(e.local_day for e in used) == sorted(reference.frozen_days)
    assert all(e.amount == 0 for e in used)
    earned = LedgerEvent.objects.filter(player_id=profile.pk, kind=EventKind.FREEZE_EARNED).count()
    assert earned == reference.freezes_earned
    assert verification.wallet_verify(player_ids=[profile.pk]) == []


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=activities, start=st.sampled_from(STARTS), cap=st.sampled_from([25, 200]))
def test_redis_path_follows_the_reference(steps, start, cap, django_settings_override):
    django_settings_override.MEMORA_XP_DAILY_CAP = cap
    run_against_reference(steps, start, cap)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=activities, start=st.sampled_from(STARTS), cap=st.sampled_from([25, 200]))
def test_database_path_follows_the_reference(steps, start, cap, django_settings_override):
    django_settings_override.MEMORA_XP_DAILY_CAP = cap
    django_settings_override.MEMORA_HOT_STATE = "database"
    run_against_reference(steps, start, cap)


@given(
    days=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=30),
)
def test_rules_streak_never_loses_longest_and_lapses_to_zero(days):
    base = dt.date(2026, 1, 1)
    numbers = rules.Numbers(freeze_max=0)
    state = rules.WalletState()
    longest = 0
    for offset in days:
        day = base + dt.timedelta(days=offset)
        before = state.streak
        state, _, _ = rules.apply(state, rules.Request(rules.LESSON, day, 10, "a"), numbers)
        streak = state.streak
        assert streak.longest >= longest
        longest = streak.longest
        if before.last_day is not None and day <= before.last_day:
            assert streak == before
    streak = state.streak
    if streak.last_day is not None:
        assert rules.streak_shown(streak, streak.last_day + dt.timedelta(days=2)) == 0
        assert rules.streak_shown(streak, streak.last_day + dt.timedelta(days=1)) == streak.current


@pytest.fixture
def django_settings_override(settings):
    return settings
