from __future__ import annotations

import math
import time

import pytest
import time_machine
from django.core.management import call_command

from devices import servicekeys

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def service_key():
    _key, raw = servicekeys.service_key_create(name="science fair", scopes=["award_xp"], actor=None)
    return raw


def award(api, key, body, idem="fair-1"):
    return api.post(
        "/api/v1/wallet/xp/", body, format="json", HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_IDEMPOTENCY_KEY=idem
    )


def test_service_award_is_shown_at_once_and_replays(api, student, service_key):
    first = award(api, service_key, {"player": student.player_id, "amount": 50, "reason": "Science fair winner"})
    assert first.status_code == 201
    body = first.json()
    assert body["xp_awarded"] == 50
    assert "capped" not in body
    assert body["wallet"]["xp_total"] == 50
    assert body["wallet"]["current_streak"] == 0  # a service award is not streak activity
    assert student.get("/api/v1/wallet/").json()["xp_total"] == 50
    replay = award(api, service_key, {"player": student.player_id, "amount": 50, "reason": "Science fair winner"})
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == body
    other = award(api, service_key, {"player": student.player_id, "amount": 60, "reason": "Science fair winner"})
    assert other.status_code == 422
    history = student.get("/api/v1/wallet/history/").json()["results"]
    assert [(e["kind"], e["amount"], e["reason"]) for e in history] == [("service", 50, "Science fair winner")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"player": 1, "amount": 0, "reason": "x"}, "amount"),
        ({"player": 1, "amount": 10001, "reason": "x"}, "amount"),
        ({"player": 1, "amount": 5, "reason": "x" * 201}, "reason"),
        ({"amount": 5, "reason": "x"}, "player"),
        ({"player": 999999, "amount": 5, "reason": "x"}, "player"),
    ],
)
def test_service_award_validation(api, service_key, body, field):
    response = award(api, service_key, body)
    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_service_key_without_scope_is_refused(api, student):
    _key, raw = servicekeys.service_key_create(name="restorer", scopes=["restore_streak"], actor=None)
    response = award(api, raw, {"player": student.player_id, "amount": 5, "reason": "x"})
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_status_reports_pending_events_and_the_flush(api, student, settings):
    settings.MEMORA_METRICS_TOKEN = "t0ken"
    started = time.time()
    assert student.post("/api/v1/lessons/a/complete/", {}, HTTP_IDEMPOTENCY_KEY="k1").status_code == 201
    assert student.post("/api/v1/lessons/b/complete/", {}, HTTP_IDEMPOTENCY_KEY="k2").status_code == 201
    assert api.get("/status").status_code == 401

    def status_at(offset: float) -> dict:
        """/status read ``offset`` seconds from now (the ages are counted from the clock)."""
        with time_machine.travel(time.time() + offset, tick=False):
            return api.get("/status", HTTP_AUTHORIZATION="Bearer t0ken").json()

    # Past the 15-minute lag bound, in whole seconds since the first event.
    for offset, ok in ((0, True), (1000, False)):
        status = status_at(offset)
        bound = offset + math.ceil(time.time() - started) + 1
        assert status["checks"]["pending_events"] == {"ok": True, "count": 2}
        age = status["checks"]["oldest_unflushed_event_age_s"]
        assert offset <= age["value"] <= bound and age["ok"] is ok, (offset, age)
    call_command("sync_wallets", "--no-progress")
    flushed = time.time()
    for offset, ok in ((0, True), (1000, False)):
        status = status_at(offset)
        bound = offset + math.ceil(time.time() - flushed) + 1
        assert status["checks"]["pending_events"] == {"ok": True, "count": 0}
        assert status["checks"]["oldest_unflushed_event_age_s"] == {"ok": True, "value": None}
        flush_age = status["checks"]["last_flush_age_s"]
        assert offset <= flush_age["value"] <= bound and flush_age["ok"] is ok, (offset, flush_age)
