"""Streak freezes and support's streak restore, over HTTP as the app and a service drive them."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import time_machine
from django.core.management import call_command

from devices import servicekeys
from wallets import replay as wallet_replay
from wallets.models import EventKind, LedgerEvent, PlayerWallet

pytestmark = pytest.mark.django_db(transaction=True)

DAY0 = dt.datetime(2026, 11, 2, 15, 0, tzinfo=dt.UTC)


def practise(student, day: int, lesson: str = "daily"):
    with time_machine.travel(DAY0 + dt.timedelta(days=day), tick=False):
        response = student.post(f"/api/v1/lessons/{lesson}/complete/", {}, HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
        assert response.status_code == 201, response.json()
        return response.json()


def wallet_on(student, day: int):
    with time_machine.travel(DAY0 + dt.timedelta(days=day), tick=False):
        return student.get("/api/v1/wallet/").json()


@pytest.fixture
def keyed_student(student_factory):
    with time_machine.travel(DAY0, tick=False):
        return student_factory()


def test_freezes_carry_a_streak_over_missed_days_and_a_longer_gap_resets_it(keyed_student):
    s = keyed_student
    for day in range(14):
        body = practise(s, day)
    assert body["wallet"]["current_streak"] == 14
    assert body["wallet"]["streak_freezes"] == 2  # one per 7 streak days, at most 2 held
    # Missed days 14 and 15: still shown as a live streak while freezes cover the gap.
    assert wallet_on(s, 16)["current_streak"] == 14
    body = practise(s, 16)
    assert body["wallet"]["current_streak"] == 15
    assert body["wallet"]["streak_freezes"] == 0
    history = wallet_on(s, 16)
    assert history["streak_freezes"] == 0
    with time_machine.travel(DAY0 + dt.timedelta(days=16), tick=False):
        events = s.get("/api/v1/wallet/history/?page_size=10").json()["results"]
    kinds = [(e["kind"], e["local_day"], e["amount"]) for e in events[:3]]
    assert kinds == [("lesson", "2026-11-18", 10), ("freeze_used", "2026-11-17", 0), ("freeze_used", "2026-11-16", 0)]
    # One missed day with no freeze left: the streak resets and reads 0 meanwhile.
    assert wallet_on(s, 18)["current_streak"] == 0
    body = practise(s, 18)
    assert body["wallet"]["current_streak"] == 1
    call_command("sync_wallets", "--no-progress")
    used = LedgerEvent.objects.filter(player_id=s.player_id, kind=EventKind.FREEZE_USED)
    assert used.count() == 2
    assert LedgerEvent.objects.filter(player_id=s.player_id, kind=EventKind.FREEZE_EARNED).count() == 2
    call_command("verify_wallets")
    wallet = PlayerWallet.objects.get(player_id=s.player_id)
    assert (wallet.current_streak, wallet.longest_streak, wallet.streak_lost) == (1, 15, 15)


def restore(api, key, player_id, reason="App outage on 2026-11-20", idem="r-1"):
    return api.post(
        f"/api/v1/players/{player_id}/streak/restore/",
        {"reason": reason},
        format="json",
        HTTP_AUTHORIZATION=f"Api-Key {key}",
        HTTP_IDEMPOTENCY_KEY=idem,
    )


def test_service_restores_the_streak_the_last_break_reset(api, keyed_student, settings):
    settings.MEMORA_STREAK_FREEZE_MAX = 0
    s = keyed_student
    _key, raw = servicekeys.service_key_create(name="support-bot", scopes=["restore_streak"], actor=None)
    for day in range(12):
        practise(s, day)
    practise(s, 14)  # a missed day resets the streak to 1
    with time_machine.travel(DAY0 + dt.timedelta(days=14, hours=1), tick=False):
        response = restore(api, raw, s.player_id)
        assert response.status_code == 201, response.json()
        body = response.json()
        assert (body["kind"], body["streak_before"], body["streak_after"]) == ("streak_restored", 1, 13)
        assert body["wallet"]["current_streak"] == 13
        replay = restore(api, raw, s.player_id)
        assert replay["Idempotent-Replayed"] == "true"
        again = restore(api, raw, s.player_id, idem="r-2")
        assert again.status_code == 400
        assert "player" in again.json()["errors"]
    assert practise(s, 15)["wallet"]["current_streak"] == 14
    call_command("sync_wallets", "--no-progress")
    event = LedgerEvent.objects.get(player_id=s.player_id, kind=EventKind.STREAK_RESTORED)
    assert (event.actor, event.reason) == ("service:support-bot", "App outage on 2026-11-20")
    assert event.streak_before == 1
    # The replay's body is rebuilt from the ledger row once Redis no longer holds the record.
    assert wallet_replay.replay_body([event])["streak_after"] == 13
    call_command("verify_wallets")


def test_restore_needs_the_scope_and_a_real_player(api, keyed_student, student):
    _key, award_only = servicekeys.service_key_create(name="awarder", scopes=["award_xp"], actor=None)
    assert restore(api, award_only, keyed_student.player_id).status_code == 403
    _key, raw = servicekeys.service_key_create(name="restorer", scopes=["restore_streak"], actor=None)
    missing = restore(api, raw, 99999999)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    student_call = student.post(
        f"/api/v1/players/{student.player_id}/streak/restore/", {"reason": "x"}, HTTP_IDEMPOTENCY_KEY="k"
    )
    # Only service keys may call it: a student's token is no credential there (401, not 403).
    assert (student_call.status_code, student_call.json()["code"]) == (401, "not_authenticated")
