"""Statement 15 and the abuse bounds over HTTP: bodies and parameters are typed, not only present,
and every odd one is a 400 with a code (never an award, never a 500); service-only routes answer
401 before any device step; lesson completions per local day are bounded."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from devices import servicekeys
from wallets.models import LedgerEvent

pytestmark = pytest.mark.django_db(transaction=True)

HISTORY = "/api/v1/wallet/history/"
EVENT = "0b6c1c3e-4f7a-4d7e-9a59-3f1f0c2a9d10"


def raw_post(student, path, raw: str, **extra):
    return student.client.post(
        path, raw, content_type="application/json", **student.headers(), HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex, **extra
    )


def assert_400(response, field):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "validation_error"
    assert field in body["errors"], body
    return body


@pytest.mark.parametrize("raw", ["false", "0", "[]", "null", '"score"', "true", "[{}]", "1.5"])
def test_a_lesson_completion_whose_body_is_not_an_object_awards_nothing(student, raw):
    assert_400(raw_post(student, "/api/v1/lessons/algebra-1/complete/", raw), "body")
    assert student.get("/api/v1/wallet/").json()["xp_total"] == 0
    assert not LedgerEvent.objects.filter(player_id=student.player_id).exists()


def test_an_empty_body_is_an_empty_object(student):
    response = student.client.post(
        "/api/v1/lessons/algebra-1/complete/", **student.headers(), HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex
    )
    assert response.status_code == 201, response.content
    assert response.json()["xp_awarded"] == 10


@pytest.mark.parametrize("score", ["100", True, 99.5, [100], {"v": 1}])
def test_a_score_must_be_an_integer(student, score):
    assert_400(raw_post(student, "/api/v1/lessons/a/complete/", json.dumps({"score": score})), "score")


@pytest.mark.parametrize("size", ["²", "٣", "1e2", "-1", "0", "101", " 5", "5 ", "0x10", "9" * 5000, ""])
def test_page_size_must_be_an_ascii_integer_in_range(student, size):
    assert_400(student.get(HISTORY, data={"page_size": size}), "page_size")


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "%%%",
        "é",
        "x" * 201,
        cursor_of("not a time|" + EVENT),
        cursor_of("2026-11-26T09:00:00|" + EVENT),  # naive
        cursor_of("0001-01-01T00:00:00+14:00|" + EVENT),  # overflows when made UTC
        cursor_of("9999-12-31T23:59:59-14:00|" + EVENT),
        cursor_of("0500-01-01T00:00:00+00:00|" + EVENT),  # before the database's range
        cursor_of("2026-11-26T09:00:00+00:00|not-a-uuid"),
        cursor_of("2026-11-26T09:00:00+00:00"),
        base64.urlsafe_b64encode(b"\xff\xfe|\x00").decode().rstrip("="),
    ],
)
def test_a_crafted_history_cursor_is_400(student, cursor):
    assert_400(student.get(HISTORY, data={"cursor": cursor}), "cursor")


def test_a_real_cursor_still_pages(student):
    for lesson in ("a", "b", "c"):
        assert student.post(f"/api/v1/lessons/{lesson}/complete/", {}, HTTP_IDEMPOTENCY_KEY=lesson).status_code == 201
    first = student.get(HISTORY, data={"page_size": 2}).json()
    assert len(first["results"]) == 2
    cursor = first["next"].split("cursor=")[1].split("&")[0]
    second = student.get(HISTORY, data={"page_size": 2, "cursor": cursor}).json()
    assert [e["lesson_id"] for e in second["results"]] == ["a"]


@pytest.fixture
def service_key():
    _, raw = servicekeys.service_key_create(name="fuzz", scopes=["award_xp", "restore_streak"], actor=None)
    return raw


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 5, "reason": 0}, "reason"),
        ({"amount": 5, "reason": ["x"]}, "reason"),
        ({"amount": "5", "reason": "x"}, "amount"),
        ({"amount": True, "reason": "x"}, "amount"),
        ({"amount": 5.5, "reason": "x"}, "amount"),
        ({"amount": 10001, "reason": "x"}, "amount"),
        ({"player": "1", "amount": 5, "reason": "x"}, "player"),
    ],
)
def test_service_award_fields_are_typed(api, student, service_key, body, field):
    payload = {"player": student.player_id, **body}
    response = api.post(
        "/api/v1/wallet/xp/",
        payload,
        format="json",
        HTTP_AUTHORIZATION=f"Api-Key {service_key}",
        HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
    )
    assert_400(response, field)


@pytest.mark.parametrize("raw", ["[]", "null", "0", '"x"'])
def test_service_bodies_that_are_not_objects(api, student, service_key, raw):
    for path in ("/api/v1/wallet/xp/", f"/api/v1/players/{student.player_id}/streak/restore/"):
        response = api.post(
            path,
            raw,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Api-Key {service_key}",
            HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
        )
        assert_400(response, "body")


def test_streak_restore_reason_is_a_string(api, student, service_key):
    response = api.post(
        f"/api/v1/players/{student.player_id}/streak/restore/",
        {"reason": 0},
        format="json",
        HTTP_AUTHORIZATION=f"Api-Key {service_key}",
        HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
    )
    assert_400(response, "reason")


@pytest.mark.parametrize("headers", [{}, {"HTTP_X_DEVICE_ID": "not-a-uuid"}, {"HTTP_AUTHORIZATION": "Bearer x"}])
def test_service_only_routes_answer_401_before_any_device_step(api, student, headers):
    for path in ("/api/v1/wallet/xp/", f"/api/v1/players/{student.player_id}/streak/restore/"):
        response = api.post(path, {"player": 1, "amount": 1, "reason": "x"}, format="json", **headers)
        assert response.status_code == 401, response.content
        assert response.json()["code"] == "not_authenticated"


def test_completions_per_local_day_are_bounded_without_writing(student, settings):
    settings.MEMORA_LESSONS_PER_DAY = 3
    for i in range(3):
        assert student.post(f"/api/v1/lessons/l{i}/complete/", {}, HTTP_IDEMPOTENCY_KEY=f"k{i}").status_code == 201
    before = student.get("/api/v1/wallet/").json()
    refused = student.post("/api/v1/lessons/l9/complete/", {}, HTTP_IDEMPOTENCY_KEY="k9")
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 24 * 3600  # until the student's local midnight
    assert student.get("/api/v1/wallet/").json() == before
    history = student.get(HISTORY).json()["results"]
    assert len(history) == 3
    # A replay of an accepted completion still replays.
    replay = student.post("/api/v1/lessons/l0/complete/", {}, HTTP_IDEMPOTENCY_KEY="k0")
    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"


def test_the_daily_bound_holds_on_the_database_path(student, settings):
    settings.MEMORA_LESSONS_PER_DAY = 2
    settings.MEMORA_HOT_STATE = "database"
    for i in range(2):
        assert student.post(f"/api/v1/lessons/d{i}/complete/", {}, HTTP_IDEMPOTENCY_KEY=f"d{i}").status_code == 201
    count = LedgerEvent.objects.filter(player_id=student.player_id).count()
    assert student.post("/api/v1/lessons/d9/complete/", {}, HTTP_IDEMPOTENCY_KEY="d9").status_code == 429
    assert LedgerEvent.objects.filter(player_id=student.player_id).count() == count
