"""POST /api/v1/auth/register/: validation of every field, taken names, closed registration and
the per-IP limit, in the design's order (body shape → IP rate limit → validation)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from devices.tests.helpers import run_in_threads
from players.models import PlayerProfile

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/auth/register/"
GOOD = {"username": "amira", "password": "correct horse battery", "display_name": "Amira"}


def register(api, body, **extra):
    return api.post(URL, body, format="json", **extra)


def assert_field_error(response, field):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["detail"] == "Some fields are invalid."
    assert field in body["errors"], body
    assert all(isinstance(m, str) and m for m in body["errors"][field])
    return body


def test_register_returns_the_profile(api):
    response = register(api, {**GOOD, "timezone": "Africa/Cairo"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "username", "display_name", "timezone", "created_at"}
    assert body["username"] == "amira"
    assert body["display_name"] == "Amira"
    assert body["timezone"] == "Africa/Cairo"
    assert body["created_at"].endswith("Z")
    profile = PlayerProfile.objects.get(pk=body["id"])
    assert profile.user.username == "amira"
    # Argon2id, never the plain password.
    assert profile.user.password.startswith("argon2$argon2id$")
    assert "correct horse battery" not in profile.user.password


def test_timezone_defaults_to_utc(api):
    response = register(api, GOOD)
    assert response.status_code == 201
    assert response.json()["timezone"] == "UTC"


@pytest.mark.parametrize(
    "username",
    ["ab", "a" * 33, "-amira", ".amira", "ami ra", "amira!", "amïra", "ami\u200bra", "ami\x00ra", ""],
)
def test_bad_usernames_are_refused(api, username):
    assert_field_error(register(api, {**GOOD, "username": username}), "username")
    assert not get_user_model().objects.exists()


@pytest.mark.parametrize(
    "password",
    ["short", "password", "12345678901", "amira1234", "", "x" * 129, "correct horse\x00battery"],
)
def test_weak_or_malformed_passwords_are_refused(api, password):
    assert_field_error(register(api, {**GOOD, "password": password}), "password")
    assert not get_user_model().objects.exists()


def test_unknown_timezone_is_a_field_error(api):
    body = assert_field_error(register(api, {**GOOD, "timezone": "Mars/Olympus"}), "timezone")
    assert body["errors"]["timezone"] == ["Unknown time zone 'Mars/Olympus'."]
    assert not PlayerProfile.objects.exists()


@pytest.mark.parametrize("tz", ["", "utc ", "Europe/Nowhere", "../../etc/passwd", "x" * 65, "Europe/Paris\x00"])
def test_odd_timezones_are_field_errors(api, tz):
    assert_field_error(register(api, {**GOOD, "timezone": tz}), "timezone")


@pytest.mark.parametrize(
    "display_name",
    ["", "   ", "Ami\x07ra", "Ami\u202era", "Ami\u200bra", "Ami\nra", "Ami\x00ra", "x" * 65],
)
def test_display_name_without_control_characters(api, display_name):
    assert_field_error(register(api, {**GOOD, "display_name": display_name}), "display_name")


def test_display_name_may_hold_any_printable_text(api):
    response = register(api, {**GOOD, "display_name": "Amira ☀ الأميرة"})
    assert response.status_code == 201
    assert response.json()["display_name"] == "Amira ☀ الأميرة"


@pytest.mark.parametrize("field", ["username", "password", "display_name", "timezone"])
@pytest.mark.parametrize("value", [None, 12345678, 1.5, True, ["amira"], {"a": "b"}])
def test_wrong_types_are_field_errors(api, field, value):
    assert_field_error(register(api, {**GOOD, field: value}), field)
    assert not get_user_model().objects.exists()


@pytest.mark.parametrize("field", ["username", "password", "display_name"])
def test_required_fields(api, field):
    body = {k: v for k, v in GOOD.items() if k != field}
    assert_field_error(register(api, body), field)


@pytest.mark.parametrize("body", [[], [GOOD], "amira", 42, None, True])
def test_a_body_that_is_not_an_object(api, body):
    response = api.post(URL, json.dumps(body), content_type="application/json")
    assert_field_error(response, "body")


@pytest.mark.parametrize("raw", [b"{", b'{"username": "amira",}', b"\xff\xfe", b"NaN", b'{"a": NaN}', b"[" * 50_000])
def test_broken_json_is_a_validation_error(api, raw):
    response = api.generic("POST", URL, raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert "body" in response.json()["errors"]


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain", "text/json"]
)
def test_a_body_that_is_not_json_is_unsupported(api, content_type):
    response = api.generic("POST", URL, b"username=amira", content_type=content_type)
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert not get_user_model().objects.exists()


def test_a_body_over_64_kib_is_too_large(api):
    response = register(api, {**GOOD, "display_name": "x" * (64 * 1024)})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_a_body_just_under_64_kib_is_read(api):
    body = json.dumps({**GOOD, "padding": ""})
    body = json.dumps({**GOOD, "padding": "x" * (64 * 1024 - len(body))})
    assert len(body) == 64 * 1024
    response = api.generic("POST", URL, body, content_type="application/json")
    assert response.status_code == 201


@pytest.mark.parametrize("taken", ["amira", "AMIRA", "Amira"])
def test_a_taken_username_is_refused_whatever_its_case(api, taken):
    assert register(api, GOOD).status_code == 201
    body = assert_field_error(register(api, {**GOOD, "username": taken}), "username")
    assert body["errors"]["username"] == ["This username is taken."]
    assert get_user_model().objects.count() == 1


def test_all_field_errors_come_together(api):
    assert register(api, GOOD).status_code == 201
    response = register(api, {**GOOD, "username": "Amira", "timezone": "Mars/Olympus", "password": "password"})
    body = assert_field_error(response, "username")
    assert {"username", "timezone", "password"} <= set(body["errors"])


def test_registration_closed(api, settings):
    settings.MEMORA_REGISTRATION_OPEN = False
    response = register(api, GOOD)
    assert response.status_code == 403
    assert response.json() == {"code": "registration_closed", "detail": "Registration is closed."}
    assert not get_user_model().objects.exists()


def test_register_is_limited_per_ip(api):
    # Every attempt counts, valid or not: 20 per hour from one address.
    for i in range(20):
        response = register(api, {**GOOD, "username": f"s{i}", "password": "short"}, REMOTE_ADDR="203.0.113.7")
        assert response.status_code == 400
    refused = register(api, GOOD, REMOTE_ADDR="203.0.113.7")
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "rate_limited"
    assert 3500 <= body["retry_after"] <= 3600
    assert refused["Retry-After"] == str(body["retry_after"])
    assert not get_user_model().objects.exists()
    # Another address is not affected.
    assert register(api, GOOD, REMOTE_ADDR="203.0.113.8").status_code == 201


def test_body_shape_comes_before_the_rate_limit(api, settings):
    settings.MEMORA_RATE_REGISTER_IP = (1, 3600)
    assert register(api, {**GOOD, "password": "short"}).status_code == 400
    assert register(api, GOOD).status_code == 429
    # A body that is not an object is refused as such, even from a limited address.
    assert_field_error(api.post(URL, "[]", content_type="application/json"), "body")


def test_parallel_registrations_of_one_name_create_one_student(api):
    def work(index: int) -> int:
        name = "Amira" if index % 2 else "amira"
        return APIClient().post(URL, {**GOOD, "username": name}, format="json").status_code

    results = run_in_threads(6, work)
    assert sorted(results) == [201] + [400] * 5, results
    assert get_user_model().objects.count() == 1


def test_registration_closed_wins_over_an_invalid_body(api, settings):
    settings.MEMORA_REGISTRATION_OPEN = False
    response = api.post(URL, {"username": "x"}, format="json")
    assert (response.status_code, response.json()["code"]) == (403, "registration_closed")
