"""A student's journey over HTTP, as the app drives it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_register_login_and_read_session(student_factory):
    student = student_factory(login=False, http=True, timezone="Africa/Cairo")
    response = student.login(device_name="Amira's phone", platform="android")
    assert response.status_code == 200
    body = response.json()
    assert body["token"].startswith(f"mem_{student.player_id}_")
    assert len(body["token"].split("_", 2)[2]) >= 43
    assert body["idle_timeout_seconds"] == 7 * 24 * 3600
    assert body["player"] == {
        "id": student.player_id,
        "username": student.username,
        "display_name": student.username.title(),
        "timezone": "Africa/Cairo",
    }
    assert body["device"]["device_id"] == student.device_id
    assert body["device"]["is_current"] is True

    session = student.get("/api/v1/session/")
    assert session.status_code == 200
    assert session.json()["device"] == {"device_id": student.device_id, "name": "Amira's phone", "platform": "android"}
    assert session.json()["expires_at"] == body["expires_at"]


def test_second_login_on_another_device_replaces_the_first_session(student):
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    refused = student.get("/api/v1/session/")
    assert refused.status_code == 401
    assert refused.json()["code"] == "session_replaced"
    assert tablet.get("/api/v1/session/").status_code == 200


def test_third_device_is_refused_and_the_live_session_survives(student):
    tablet = student.on_device()
    assert tablet.login(device_name="Tablet").status_code == 200
    third = student.on_device()
    refused = third.login()
    assert refused.status_code == 403
    body = refused.json()
    assert body["code"] == "device_limit_reached"
    assert {d["device_id"] for d in body["devices"]} == {student.device_id, tablet.device_id}
    assert tablet.get("/api/v1/session/").status_code == 200


def test_logout_ends_the_session(student):
    assert student.post("/api/v1/auth/logout/").status_code == 204
    after = student.get("/api/v1/session/")
    assert after.status_code == 401
    assert after.json() == {
        "code": "session_ended",
        "detail": "You signed out. Please sign in again.",
        "reason": "logout",
    }


@pytest.mark.parametrize("device_header", [None, "", "not-a-uuid", "c8eee048-e9ba-11f1-8797-02fc00000001", "0" * 36])
def test_bad_device_ids_are_refused_first(student, device_header):
    extra = {"HTTP_AUTHORIZATION": f"Bearer {student.token}"}
    if device_header is not None:
        extra["HTTP_X_DEVICE_ID"] = device_header
    response = student.client.get("/api/v1/session/", **extra)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_device_id"


def test_token_from_another_device_is_a_mismatch(student):
    thief = student.on_device()
    thief.token = student.token
    response = thief.get("/api/v1/session/")
    assert response.status_code == 403
    assert response.json()["code"] == "device_mismatch"


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "mem_1_short", "mem_999999_" + "A" * 43, "Token abc"],
)
def test_forged_tokens_are_not_authenticated(student, token):
    student.token = token
    response = student.get("/api/v1/session/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_forged_secret_for_a_real_player_is_not_authenticated(student):
    student.token = f"mem_{student.player_id}_" + "B" * 43
    response = student.get("/api/v1/session/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
