"""rules.apply, case by case (no database, no Redis): what each kind of request does to a wallet."""

from __future__ import annotations

import datetime as dt

from wallets import rules

D = dt.date(2026, 4, 10)
N = rules.Numbers(lesson_base=10, perfect_bonus=5, daily_cap=25, freeze_every=3, freeze_max=1)


def day(n: int) -> dt.date:
    return D + dt.timedelta(days=n)


def lesson(state: rules.WalletState, n: int, lesson_id: str = "a", score: int | None = None):
    return rules.apply(state, rules.Request(rules.LESSON, day(n), rules.lesson_base_xp(score, N), lesson_id), N)


def test_the_perfect_bonus_comes_from_the_numbers():
    assert rules.lesson_base_xp(100, N) == 15
    assert rules.lesson_base_xp(99, N) == 10
    assert rules.lesson_base_xp(100, rules.Numbers(perfect_bonus=0)) == 10


def test_the_cap_cuts_and_a_repeat_earns_nothing():
    state, _, first = lesson(rules.WalletState(), 0, "a", 100)
    state, _, second = lesson(state, 0, "b", 100)
    state, events, repeat = lesson(state, 0, "a", 100)
    assert (first.awarded, second.awarded, second.capped) == (15, 10, True)
    assert (repeat.awarded, repeat.capped) == (0, False)
    assert [e.kind for e in events] == ["lesson"]
    assert (state.xp, state.xp_day, state.lessons) == (25, 25, frozenset({"a", "b"}))
    # A new day opens a new cap and forgets the lessons done.
    state, _, next_day = lesson(state, 1, "a", 100)
    assert (next_day.awarded, state.xp_day, state.lessons) == (15, 15, frozenset({"a"}))


def test_a_day_back_counts_as_the_last_day():
    state, _, _ = lesson(rules.WalletState(), 1, "a")
    after, events, outcome = lesson(state, 0, "a")
    assert outcome.awarded == 0
    assert events[0].day == day(1)
    assert after.streak == state.streak


def test_a_freeze_is_earned_then_covers_a_gap():
    state = rules.WalletState()
    for n in range(3):
        state, events, _ = lesson(state, n)
    assert [e.kind for e in events] == ["lesson", "freeze_earned"]
    assert (events[0].after.streak.freezes, events[1].after.streak.freezes) == (0, 1)
    state, events, _ = lesson(state, 4)  # day 3 missed: the freeze covers it
    assert [(e.kind, e.day) for e in events] == [("freeze_used", day(3)), ("lesson", day(4))]
    assert events[0].after.streak.last_day == day(3)
    assert (state.streak.current, state.streak.freezes) == (4, 0)


def test_a_break_remembers_the_streak_lost_and_a_restore_puts_it_back():
    state = rules.WalletState()
    for n in (0, 1):
        state, _, _ = lesson(state, n)
    state, _, _ = lesson(state, 5)
    assert (state.streak.current, state.streak.streak_lost) == (1, 2)
    state, events, outcome = rules.apply(state, rules.Request(rules.RESTORE, day(6)), N)
    assert [e.kind for e in events] == ["streak_restored"]
    assert outcome.streak_before == 1
    assert (state.streak.current, state.streak.streak_lost, state.streak.longest) == (3, 0, 3)
    _, events, outcome = rules.apply(state, rules.Request(rules.RESTORE, day(6)), N)
    assert (events, outcome.nothing_to_restore) == ([], True)


def test_a_lapsed_streak_is_restored_to_yesterday_without_its_lessons():
    state = rules.WalletState()
    for n in (0, 1):
        state, _, _ = lesson(state, n)
    state, _, outcome = rules.apply(state, rules.Request(rules.RESTORE, day(5)), N)
    assert outcome.streak_before == 0
    assert (state.streak.current, state.streak.last_day) == (2, day(4))
    assert (state.xp_day, state.lessons) == (0, frozenset())
    assert rules.streak_shown(state.streak, day(5)) == 2


def test_a_service_award_is_not_capped_and_keeps_the_streak():
    state, _, _ = lesson(rules.WalletState(), 0)
    after, events, outcome = rules.apply(state, rules.Request(rules.SERVICE, day(0), 500), N)
    assert (outcome.awarded, after.xp, after.xp_day, after.streak) == (500, 510, 10, state.streak)
    assert [(e.kind, e.amount, e.main) for e in events] == [("service", 500, True)]
