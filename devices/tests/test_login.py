"""POST /api/v1/auth/login/: the design's order of checks (body shape → X-Device-ID → IP and
username rate limits → credentials → revoked device → device rules), lockouts, and the client IP."""

from __future__ import annotations

import time
import uuid

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import RequestFactory

from core import hotstate
from core.clientip import client_ip
from devices import loginlimits, services
from devices.models import AuthorizedDevice, LoginFailure
from devices.tests.helpers import snapshot

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/auth/login/"


def login(api, body, device_id=None, **extra):
    headers = {} if device_id is False else {"HTTP_X_DEVICE_ID": device_id or str(uuid.uuid4())}
    return api.post(URL, body, format="json", **headers, **extra)


def creds(student, password=None):
    return {"username": student.username, "password": password or student.password}


def assert_code(response, status, code):
    assert response.status_code == status, response.content
    assert response.json()["code"] == code, response.json()
    return response.json()


def poll(predicate, *, seconds: float = 15.0):
    """Poll a behaviour with a time bound (a lock with a short expiry); the last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# --- body shape, then X-Device-ID, then rate limits ------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "amira"},
        {"password": "x"},
        {"username": 1, "password": "x"},
        {"username": "a", "password": None},
    ],
)
def test_body_shape_comes_before_the_device_id(api, body):
    result = assert_code(login(api, body, device_id=False), 400, "validation_error")
    assert set(result["errors"]) <= {"username", "password"}


@pytest.mark.parametrize("body", [[], "amira", 3, None])
def test_a_body_that_is_not_an_object(api, body):
    import json

    response = api.post(URL, json.dumps(body), content_type="application/json", HTTP_X_DEVICE_ID=str(uuid.uuid4()))
    assert "body" in assert_code(response, 400, "validation_error")["errors"]


def test_broken_json_and_other_media_types(api):
    assert_code(api.generic("POST", URL, b'{"username": ', content_type="application/json"), 400, "validation_error")
    assert_code(
        api.generic("POST", URL, b"username=a&password=b", content_type="application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    )


@pytest.mark.parametrize(
    "device_id",
    [None, "", "nope", "c8f6883e-e9ba-11f1-8797-02fc00000001", "6f70e0ae-d306-49cb-b5a9-476fc26f1a6", "0" * 36],
)
def test_device_id_is_checked_after_the_body_shape(student, api, device_id):
    extra = {} if device_id is None else {"HTTP_X_DEVICE_ID": device_id}
    response = api.post(URL, creds(student), format="json", **extra)
    assert_code(response, 400, "invalid_device_id")


def test_device_id_is_checked_before_the_rate_limits(student_factory, api, settings):
    student = student_factory(login=False)
    settings.MEMORA_RATE_LOGIN_IP = (2, 600)
    assert login(api, creds(student, "wrong password")).status_code == 401
    assert login(api, creds(student, "wrong password")).status_code == 401
    assert_code(login(api, creds(student)), 429, "rate_limited")
    # A bad device id is refused as such, and does not count.
    assert_code(login(api, creds(student), device_id="not-a-uuid"), 400, "invalid_device_id")
    # So is a bad body.
    assert_code(login(api, {"username": student.username}), 400, "validation_error")


def test_field_validation(api, student):
    for extra, field in [
        ({"device_name": "phone\x07"}, "device_name"),
        ({"device_name": "x" * 65}, "device_name"),
        ({"platform": "android\u202e"}, "platform"),
        ({"platform": 3}, "platform"),
        ({"replace_device_id": "nope"}, "replace_device_id"),
        ({"username": "x" * 151}, "username"),
        ({"password": "amira\x00"}, "password"),
    ]:
        body = {**creds(student), **extra}
        result = assert_code(login(api, body), 400, "validation_error")
        assert field in result["errors"], (extra, result)


# --- credentials -----------------------------------------------------------------------------------


def test_unknown_user_and_wrong_password_answer_identically(api, student):
    wrong = login(api, creds(student, "not the password"))
    unknown = login(api, {"username": "nobody_here", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"code": "invalid_credentials", "detail": "Wrong username or password."}
    assert sorted(wrong.headers) == sorted(unknown.headers)
    assert dict(wrong.headers) == dict(unknown.headers)


def test_username_is_case_insensitive(api, student):
    response = login(api, {"username": student.username.upper(), "password": student.password})
    assert response.status_code == 200
    assert response.json()["player"]["username"] == student.username


@pytest.mark.parametrize("spelling", ["ámira", "amíra", "AMÍRA", "\uff41mira", "amira\u0301"])
def test_only_the_username_itself_logs_in_not_a_lookalike(api, student_factory, spelling):
    """MariaDB's collation matches accented spellings; each would have its own lockout."""
    student = student_factory(username="amira", login=False)
    assert_code(login(api, {"username": spelling, "password": student.password}), 401, "invalid_credentials")


def test_a_lookalike_spelling_does_not_dodge_the_lockout(api, student_factory):
    student = student_factory(username="amira", login=False)
    for _ in range(10):
        login(api, creds(student, "wrong password"))
    assert_code(login(api, creds(student)), 429, "rate_limited")
    for spelling in ["amíra", "ámira", "amirá", "AMİRA"]:
        # Not the account (no login, no lock of its own to spend): the plain refusal.
        assert_code(login(api, {"username": spelling, "password": student.password}), 401, "invalid_credentials")


def test_a_deactivated_account_cannot_log_in(api, student):
    user = get_user_model().objects.get(username=student.username)
    user.is_active = False
    user.save()
    assert_code(login(api, creds(student)), 401, "invalid_credentials")


def test_staff_without_a_profile_cannot_log_in_to_the_api(api):
    get_user_model().objects.create_user("agent", password="correct horse battery", is_staff=True)
    assert_code(login(api, {"username": "agent", "password": "correct horse battery"}), 401, "invalid_credentials")


def test_a_wrong_password_learns_nothing_about_devices_at_the_limit(student):
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    before = snapshot(student.player_id)
    third = student.on_device()
    assert_code(third.login(password="wrong password"), 401, "invalid_credentials")
    assert_code(third.login(), 403, "device_limit_reached")
    assert snapshot(student.player_id) == before
    assert tablet.get("/api/v1/session/").status_code == 200


def test_a_wrong_password_learns_nothing_about_a_revoked_device(student):
    device = AuthorizedDevice.objects.get(player_id=student.player_id, device_id=student.device_id)
    services.device_revoke(device_pk=device.pk, actor=None, reason="lost phone")
    assert_code(student.login(password="wrong password"), 401, "invalid_credentials")
    assert_code(student.login(), 403, "device_revoked")


def test_a_wrong_password_leaves_the_live_session_alone(student):
    before = snapshot(student.player_id)
    other = student.on_device()
    assert_code(other.login(password="wrong password"), 401, "invalid_credentials")
    assert snapshot(student.player_id) == before
    assert student.get("/api/v1/session/").status_code == 200


# --- lockouts --------------------------------------------------------------------------------------


def test_ten_failures_lock_the_username_on_this_address_even_for_the_right_password(api, student, settings):
    # A short lock, so that its expiry is observed; long enough for the checks below on a busy machine.
    settings.MEMORA_LOGIN_LOCK_SECONDS = 3
    for _ in range(10):
        assert_code(login(api, creds(student, "wrong password")), 401, "invalid_credentials")
    locked = login(api, creds(student))
    body = assert_code(locked, 429, "rate_limited")
    assert body["retry_after"] in (1, 2, 3)
    assert locked["Retry-After"] == str(body["retry_after"])
    # Any spelling of the username is the same lock.
    assert_code(login(api, {**creds(student), "username": student.username.upper()}), 429, "rate_limited")
    # Another address is not locked.
    assert login(api, creds(student), student.device_id, REMOTE_ADDR="198.51.100.9").status_code == 200
    # Once the lock expires, the right password works again.
    assert poll(lambda: login(api, creds(student), student.device_id).status_code == 200)


def test_the_lock_lasts_its_full_time(api, student):
    for _ in range(10):
        login(api, creds(student, "wrong password"))
    locked = login(api, creds(student))
    body = assert_code(locked, 429, "rate_limited")
    assert 15 * 60 - 5 <= body["retry_after"] <= 15 * 60
    assert locked["Retry-After"] == str(body["retry_after"])


def test_an_unknown_username_locks_the_same_way(api):
    for _ in range(10):
        assert_code(login(api, {"username": "ghost", "password": "nope nope"}), 401, "invalid_credentials")
    assert_code(login(api, {"username": "ghost", "password": "nope nope"}), 429, "rate_limited")


def test_a_success_resets_the_failures_of_this_address(api, student):
    for _ in range(9):
        login(api, creds(student, "wrong password"))
    assert login(api, creds(student), student.device_id).status_code == 200
    for _ in range(9):
        assert_code(login(api, creds(student, "wrong password")), 401, "invalid_credentials")
    assert login(api, creds(student), student.device_id).status_code == 200


def test_the_per_username_ceiling_spans_addresses(api, student, settings):
    settings.MEMORA_RATE_LOGIN_FAILURES_USER = (3, 3600)
    for i in range(3):
        assert_code(
            login(api, creds(student, "wrong password"), REMOTE_ADDR=f"192.0.2.{i + 1}"), 401, "invalid_credentials"
        )
    locked = login(api, creds(student), REMOTE_ADDR="192.0.2.200")
    body = assert_code(locked, 429, "rate_limited")
    assert 3590 <= body["retry_after"] <= 3600
    assert locked["Retry-After"] == str(body["retry_after"])
    # Another student is not affected.
    other = student.on_device()
    other.username = "someone_else"
    assert_code(login(api, creds(other)), 401, "invalid_credentials")


def test_the_per_username_ceiling_behind_a_trusted_proxy(api, student, settings):
    settings.MEMORA_RATE_LOGIN_FAILURES_USER = (3, 3600)
    settings.MEMORA_TRUSTED_PROXIES = ["10.0.0.0/8"]
    for i in range(3):
        response = login(
            api, creds(student, "wrong password"), REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=f"192.0.2.{i + 1}"
        )
        assert_code(response, 401, "invalid_credentials")
    assert_code(
        login(api, creds(student), REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="192.0.2.99"), 429, "rate_limited"
    )


def test_the_per_ip_attempt_limit(api, student, settings):
    settings.MEMORA_RATE_LOGIN_IP = (3, 600)
    for _ in range(3):
        assert login(api, creds(student), student.device_id, REMOTE_ADDR="203.0.113.1").status_code == 200
    refused = login(api, creds(student), student.device_id, REMOTE_ADDR="203.0.113.1")
    body = assert_code(refused, 429, "rate_limited")
    assert 590 <= body["retry_after"] <= 600
    assert login(api, creds(student), student.device_id, REMOTE_ADDR="203.0.113.2").status_code == 200


def test_forwarded_for_from_an_untrusted_peer_does_not_dodge_the_limits(api, student, settings):
    settings.MEMORA_RATE_LOGIN_IP = (2, 600)
    for i in range(2):
        login(api, creds(student), REMOTE_ADDR="203.0.113.1", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
    response = login(api, creds(student), REMOTE_ADDR="203.0.113.1", HTTP_X_FORWARDED_FOR="192.0.2.77")
    assert_code(response, 429, "rate_limited")


def test_lockout_counts_in_the_database_while_redis_is_away(api, student, settings):
    settings.MEMORA_HOT_STATE = "database"
    for _ in range(10):
        assert_code(login(api, creds(student, "wrong password")), 401, "invalid_credentials")
    assert LoginFailure.objects.count() == 10
    locked = login(api, creds(student))
    body = assert_code(locked, 429, "rate_limited")
    assert 15 * 60 - 5 <= body["retry_after"] <= 15 * 60
    assert login(api, creds(student), student.device_id, REMOTE_ADDR="198.51.100.9").status_code == 200


def test_database_path_success_resets_the_failures_of_this_address(api, student, settings):
    settings.MEMORA_HOT_STATE = "database"
    for _ in range(9):
        login(api, creds(student, "wrong password"))
    assert login(api, creds(student), student.device_id).status_code == 200
    for _ in range(9):
        assert_code(login(api, creds(student, "wrong password")), 401, "invalid_credentials")
    assert login(api, creds(student), student.device_id).status_code == 200


def test_database_path_per_username_ceiling(api, student, settings):
    settings.MEMORA_HOT_STATE = "database"
    settings.MEMORA_RATE_LOGIN_FAILURES_USER = (3, 3600)
    for i in range(3):
        login(api, creds(student, "wrong password"), REMOTE_ADDR=f"192.0.2.{i + 1}")
    assert_code(login(api, creds(student), REMOTE_ADDR="192.0.2.200"), 429, "rate_limited")


# --- the client IP ---------------------------------------------------------------------------------


def ip_of(remote: str, forwarded: str | None = None) -> str:
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_ip(RequestFactory().get("/", **meta))


def test_an_untrusted_peer_is_the_client(settings):
    settings.MEMORA_TRUSTED_PROXIES = []
    assert ip_of("203.0.113.5", "1.2.3.4") == "203.0.113.5"
    settings.MEMORA_TRUSTED_PROXIES = ["10.0.0.1"]
    assert ip_of("203.0.113.5", "1.2.3.4") == "203.0.113.5"


def test_behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client(settings):
    settings.MEMORA_TRUSTED_PROXIES = ["10.0.0.0/8", "2001:db8::/32"]
    assert ip_of("10.0.0.1", "1.2.3.4") == "1.2.3.4"
    # A client can write anything on the left; only the hops our proxies appended count.
    assert ip_of("10.0.0.1", "6.6.6.6, 1.2.3.4") == "1.2.3.4"
    assert ip_of("10.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.7") == "1.2.3.4"
    assert ip_of("10.0.0.1", " 1.2.3.4 ,10.1.1.1 ") == "1.2.3.4"
    assert ip_of("2001:db8::1", "2001:db8::2, 2001:dead::1") == "2001:dead::1"
    # Only trusted hops: the left-most of them is as far as we can see.
    assert ip_of("10.0.0.1", "10.0.0.9, 10.0.0.8") == "10.0.0.9"
    # No header behind a proxy: the proxy itself.
    assert ip_of("10.0.0.1") == "10.0.0.1"
    assert ip_of("10.0.0.1", "") == "10.0.0.1"


def test_garbled_forwarded_for_never_becomes_the_client(settings):
    settings.MEMORA_TRUSTED_PROXIES = ["10.0.0.0/8"]
    for garbage in ["garbage", "1.2.3.4, not-an-ip", "1.2.3.4, 999.1.1.1", "\x00", "é, 1.2.3.4x"]:
        assert ip_of("10.0.0.1", garbage) == "10.0.0.1", garbage


@pytest.mark.django_db(transaction=True)
def test_a_login_costs_twelve_statements_and_two_round_trips(student_factory):
    """The login's own work besides the hash (issue 14): the student found by one statement; one
    transaction that locks the profile, its user and its auth state in one read, reads every
    device once and the Redis copy's sessions under the student's lock (no second read after
    commit); the outbox row deleted by one statement. Redis: the address's attempt and the locks
    in one pipeline, then the copy's write; no DEL when the scope has no failures to clear."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from devices.tests.helpers import count_redis_round_trips

    student = student_factory(login=False)
    assert student.login().status_code == 200
    with CaptureQueriesContext(connection) as queries, count_redis_round_trips() as trips:
        assert student.login().status_code == 200
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    assert len(statements) == 12, statements
    assert statements.count("BEGIN") == 1 and statements.count("COMMIT") == 1, statements
    assert statements[-1] == "DELETE", statements  # the outbox row, after commit
    # (A round trip may carry the server-identity probe ahead of its command: core.redisconn.)
    assert len(trips) == 2, trips.sent
    assert trips.sent[0].count(b"EVALSHA") == 2  # the attempt and the locks: one pipeline
    assert b"EVALSHA" in trips.sent[1] and b":auth:" in trips.sent[1]  # the copy's write


@pytest.mark.django_db(transaction=True)
def test_a_right_password_after_a_failure_still_clears_the_failures(student_factory):
    """The gate reports the scope's failure counter: only then does the login spend a DEL on it."""
    from devices.tests.helpers import count_redis_round_trips

    student = student_factory(login=False)
    assert student.login(password="wrong password!!").status_code == 401
    user_key = loginlimits.username_key(student.username)
    counter = f"{django_settings.MEMORA_REDIS_KEY_PREFIX}:rl:{{u:{user_key}}}:fail_ip:127.0.0.1"
    assert hotstate.connection().exists(counter) == 1
    with count_redis_round_trips() as trips:
        assert student.login().status_code == 200
    assert len(trips) == 3, trips.sent
    assert b"DEL" in trips.sent[1] and b":auth:" in trips.sent[2]
    assert hotstate.connection().exists(counter) == 0
