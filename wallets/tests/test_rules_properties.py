"""The award script held to the pure rules: random sequences of every kind of request (lessons with
repeats, the daily cap and perfect scores; service awards; gaps covered by held freezes and
freezes earned; streak restores, possible or not) run through ``services.wallet_award`` on both
values of ``MEMORA_HOT_STATE`` (the Lua script, or the database path) and through
``rules.apply``; the answers, the events (kinds, amounts, days, the wallet after each) and the
wallet must agree. Derandomized: the same examples on every run."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import hotstate
from core.errors import ApiError
from players.tests.factories import PlayerFactory
from wallets import cache, flush, replay, rules, services, verification
from wallets.events import PendingEvent
from wallets.models import LedgerEvent, PlayerWallet
from wallets.tests.factories import award_request

pytestmark = pytest.mark.django_db

START = dt.date(2026, 3, 1)
# Days after the previous request: mostly the same or the next day, gaps held freezes may cover,
# and a day back (a westward time zone move counts as the last day).
DELTAS = [0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4, -1]


def sequence_of(seed: int) -> list[tuple[Any, ...]]:
    """A long random run of requests (hypothesis's own lists stay short when derandomized, too
    short to reach a held freeze's limit): three lessons in four, then service awards and
    restores; a failure names its seed."""
    rnd = random.Random(seed)
    found: list[tuple[Any, ...]] = []
    for _ in range(rnd.randint(10, 45)):
        delta, pick = rnd.choice(DELTAS), rnd.random()
        if pick < 0.72:
            found.append((rules.LESSON, delta, rnd.choice(["a", "b", "c", "d.1"]), rnd.choice([None, 80, 100])))
        elif pick < 0.88:
            found.append((rules.SERVICE, delta, rnd.choice([0, 1, 25, 500])))
        else:
            found.append((rules.RESTORE, delta))
    return found


steps = st.integers(min_value=0, max_value=2**32).map(sequence_of)
NUMBERS = st.builds(
    rules.Numbers,
    lesson_base=st.just(10),
    perfect_bonus=st.sampled_from([5, 20]),
    daily_cap=st.sampled_from([25, 60]),
    freeze_every=st.sampled_from([2, 3]),
    freeze_max=st.sampled_from([1, 2]),
)
# The part of an event both sides state: kind, amount, day and the wallet after it.
EventView = tuple[Any, ...]


def _expected_view(e: rules.Event) -> EventView:
    s = e.after.streak
    after = (e.after.xp, e.after.xp_day, s.current, s.longest, s.last_day, s.freezes, s.streak_lost)
    return (e.kind, e.amount, e.day, e.lesson_id or None, e.capped, e.streak_before, *after)


def _stored_view(e: PendingEvent | LedgerEvent) -> EventView:
    s = (e.streak_after, e.longest_after, e.last_day_after, e.freezes_after, e.streak_lost_after)
    return (e.kind, e.amount, e.local_day, e.lesson_id, e.capped, e.streak_before, e.xp_total_after, e.xp_day_after, *s)


def _use(numbers: rules.Numbers, django_settings: Any) -> None:
    django_settings.MEMORA_XP_LESSON_BASE = numbers.lesson_base
    django_settings.MEMORA_XP_PERFECT_BONUS = numbers.perfect_bonus
    django_settings.MEMORA_XP_DAILY_CAP = numbers.daily_cap
    django_settings.MEMORA_STREAK_FREEZE_EVERY = numbers.freeze_every
    django_settings.MEMORA_STREAK_FREEZE_MAX = numbers.freeze_max


def run_both(sequence: list[tuple[Any, ...]], numbers: rules.Numbers, *, hot_state: str) -> None:
    player_id = PlayerFactory().pk
    state = rules.WalletState()
    expected: list[EventView] = []
    main_ids: list[str] = []
    day = START
    for kind, delta, *rest in sequence:
        day += dt.timedelta(days=delta)
        if kind == rules.LESSON:
            lesson_id, score = rest
            amount = rules.lesson_base_xp(score, numbers)
            request = award_request(
                player_id=player_id, kind=kind, base_amount=amount, local_day=day, lesson_id=lesson_id
            )
        elif kind == rules.SERVICE:
            (amount,) = rest
            lesson_id = ""
            request = award_request(player_id=player_id, kind=kind, base_amount=amount, local_day=day)
        else:
            amount, lesson_id = 0, ""
            request = award_request(player_id=player_id, kind=kind, base_amount=0, local_day=day, actor="admin:t")
        after, events, outcome = rules.apply(state, rules.Request(kind, day, amount, lesson_id), numbers)
        if outcome.nothing_to_restore:
            with pytest.raises(ApiError) as refused:
                services.wallet_award(request=request)
            assert refused.value.status == 400
            continue
        answer = services.wallet_award(request=request)
        main = next(e for e in events if e.main)
        rendered = replay.Answer(
            answer.body["event_id"], main.kind, outcome.awarded, outcome.capped, outcome.streak_before, day, after
        ).body()
        assert answer.body == rendered, (kind, day, state)
        # The renderer is shared: the fields a client reads, stated plainly as well.
        if kind == rules.RESTORE:
            assert answer.body["streak_before"] == outcome.streak_before
        else:
            assert answer.body["xp_awarded"] == outcome.awarded
        assert answer.body["wallet"]["xp_total"] == after.xp
        state = after
        expected += [_expected_view(e) for e in events]
        main_ids.append(answer.body["event_id"])

    if hot_state == "redis":
        _, raw = cache.read_unflushed(player_id)
        stored = sorted((PendingEvent.from_redis(player_id, json.dumps(e)) for e in raw), key=lambda e: e.order)
        hashed = cache.read_wallet(player_id)
        assert hashed is not None
        assert (hashed.xp, hashed.streak, hashed.xp_day) == (state.xp, state.streak, state.xp_day)
        if state.streak.last_day is not None:
            assert hashed.day == state.streak.last_day
            lessons = hotstate.connection().smembers(cache.lessons_key(player_id))
            assert {m.decode() for m in lessons} == state.lessons
        stored_main = [str(e.event_id) for e in stored if e.request_id == str(e.event_id)]
        flush.wallet_flush(player_ids=[player_id], trigger="manual")
    else:
        stored = list(LedgerEvent.objects.filter(player_id=player_id).order_by("generation", "version"))
        stored_main = [str(e.event_id) for e in stored if e.kind not in replay.FREEZE_KINDS]
    assert [_stored_view(e) for e in stored] == expected
    assert stored_main == main_ids
    wallet = PlayerWallet.objects.filter(player_id=player_id).first() or PlayerWallet(player_id=player_id)
    assert (wallet.xp_total, replay.streak_of(wallet)) == (state.xp, state.streak)
    assert verification.wallet_verify(player_ids=[player_id]) == []


COMMON = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


@settings(max_examples=40, **COMMON)
@given(sequence=steps, numbers=NUMBERS)
def test_the_award_script_follows_the_rules(sequence, numbers, settings):
    _use(numbers, settings)
    run_both(sequence, numbers, hot_state="redis")


@settings(max_examples=20, **COMMON)
@given(sequence=steps, numbers=NUMBERS)
def test_the_database_path_follows_the_rules(sequence, numbers, settings):
    _use(numbers, settings)
    settings.MEMORA_HOT_STATE = "database"
    run_both(sequence, numbers, hot_state="database")


def test_a_record_written_before_answers_carried_state_replays_its_body():
    """Idempotency records the former script wrote hold the body itself: answered as they are."""
    player_id = PlayerFactory().pk
    request = award_request(player_id=player_id, base_amount=9)
    first = services.wallet_award(request=request)
    old_body = {**first.body, "event_id": str(uuid.uuid4())}
    record = json.dumps({"fp": request.fp_digest, "status": 201, "body": json.dumps(old_body)})
    hotstate.connection().set(cache.idem_key(player_id, request.idem_digest), record)
    again = services.wallet_award(request=request)
    assert (again.status, again.body, again.replayed) == (201, old_body, True)


def test_an_answer_record_round_trips():
    streak = rules.Streak(3, 9, dt.date(2026, 5, 2), 1, 4)
    answer = replay.Answer(
        str(uuid.uuid4()), "streak_restored", 0, False, 2, dt.date(2026, 5, 3), rules.WalletState(120, streak, 30)
    )
    assert replay.Answer.from_record(answer.record()) == answer
    lesson = replay.Answer(str(uuid.uuid4()), "lesson", 5, True, None, dt.date(2026, 5, 3), rules.WalletState())
    assert replay.Answer.from_record(lesson.record()) == lesson
