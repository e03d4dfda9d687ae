"""One session: every way a session ends is refused on its very next request, with its own code and
reason, on the Redis path (no database query) and on the database path (MEMORA_HOT_STATE=database);
idle and lifetime expiry; the order revoked > replaced > ended > expired; device_mismatch only for a
live session."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.utils import timezone

from devices import services
from devices.models import AuditAction, AuthorizedDevice, DeviceAuditEntry, PlayerSession
from devices.tests.factories import StaffFactory
from devices.tests.helpers import wipe_player_keys

pytestmark = pytest.mark.django_db(transaction=True)

DAY = dt.timedelta(days=1)
SESSION = "/api/v1/session/"

REPLACED = {"code": "session_replaced", "detail": "You were signed in on another device."}
LOGOUT = {"code": "session_ended", "detail": "You signed out. Please sign in again.", "reason": "logout"}
PASSWORD = {
    "code": "session_ended",
    "detail": "Your password was changed. Please sign in again.",
    "reason": "password_changed",
}
DEACTIVATED = {"code": "session_ended", "detail": "Your account was deactivated.", "reason": "deactivated"}
SUPPORT = {
    "code": "session_ended",
    "detail": "Your session was ended by support. Please sign in again.",
    "reason": "ended_by_support",
}
REVOKED = {"code": "device_revoked", "detail": "This device was removed from your account."}
IDLE = {"code": "session_expired", "detail": "Your session expired. Please sign in again.", "reason": "idle"}
LIFETIME = {"code": "session_expired", "detail": "Your session expired. Please sign in again.", "reason": "lifetime"}
MISMATCH = {"code": "device_mismatch", "detail": "This session belongs to another device."}


@pytest.fixture(params=["redis", "database"])
def hot_path(request, settings):
    settings.MEMORA_HOT_STATE = request.param
    return request.param


@pytest.fixture
def refused(hot_path, django_assert_num_queries, django_assert_max_num_queries):
    """Assert a request is refused with exactly this body; on the Redis path, with no query."""

    def check(response_of, status, body):
        if hot_path == "redis":
            with django_assert_num_queries(0):
                response = response_of()
        else:
            response = response_of()
        assert response.status_code == status, response.content
        assert response.json() == body
        return response

    return check


def user_of(student):
    return get_user_model().objects.get(username=student.username)


# --- each end is refused on the very next request ------------------------------------------------------


def test_replaced(student, refused):
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    refused(lambda: student.get(SESSION), 401, REPLACED)
    assert tablet.get(SESSION).status_code == 200


def test_logout(student, refused):
    assert student.post("/api/v1/auth/logout/").status_code == 204
    refused(lambda: student.get(SESSION), 401, LOGOUT)
    refused(lambda: student.post("/api/v1/auth/logout/"), 401, LOGOUT)
    session = PlayerSession.objects.get(player_id=student.player_id)
    assert (session.is_live, session.end_reason) == (None, "logout")


def test_password_changed_through_the_orm(student, refused):
    user = user_of(student)
    user.set_password("a brand new passphrase")
    user.save()
    refused(lambda: student.get(SESSION), 401, PASSWORD)
    assert student.login(password="a brand new passphrase").status_code == 200
    assert student.get(SESSION).status_code == 200


def test_password_changed_with_update_fields(student, refused):
    user = user_of(student)
    user.set_password("a brand new passphrase")
    user.save(update_fields=["password"])
    refused(lambda: student.get(SESSION), 401, PASSWORD)


def test_password_changed_with_the_changepassword_command(student, refused, monkeypatch):
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "a brand new passphrase")
    call_command("changepassword", student.username, stdout=open("/dev/null", "w"))  # noqa: SIM115
    refused(lambda: student.get(SESSION), 401, PASSWORD)


def test_saving_the_user_without_a_change_ends_nothing(student):
    user = user_of(student)
    user.first_name = "Amira"
    user.save()
    user.save(update_fields=["last_login"])
    assert student.get(SESSION).status_code == 200


def test_deactivated(student, refused):
    user = user_of(student)
    user.is_active = False
    user.save()
    refused(lambda: student.get(SESSION), 401, DEACTIVATED)
    assert student.login().json()["code"] == "invalid_credentials"


def test_deactivated_with_update_fields(student, refused):
    user = user_of(student)
    user.is_active = False
    user.save(update_fields=["is_active"])
    refused(lambda: student.get(SESSION), 401, DEACTIVATED)


def test_ended_by_support(student, refused):
    agent = StaffFactory(username="agent")
    assert services.session_end_all(player_id=student.player_id, reason="ended_by_support", actor=agent) == 1
    refused(lambda: student.get(SESSION), 401, SUPPORT)
    entry = DeviceAuditEntry.objects.get(player_id=student.player_id, action=AuditAction.SESSIONS_ENDED)
    assert entry.actor == agent
    # The devices stay authorized: the student signs in again on the same device.
    assert student.login().status_code == 200


def test_device_revoked(student, refused):
    device = AuthorizedDevice.objects.get(player_id=student.player_id, device_id=student.device_id)
    services.device_revoke(device_pk=device.pk, actor=None, reason="lost")
    refused(lambda: student.get(SESSION), 401, REVOKED)


def test_each_end_is_refused_on_every_student_endpoint(student, refused):
    assert student.post("/api/v1/auth/logout/").status_code == 204
    refused(lambda: student.get("/api/v1/profile/"), 401, LOGOUT)
    refused(lambda: student.patch("/api/v1/profile/", {"display_name": "X"}), 401, LOGOUT)
    refused(lambda: student.get("/api/v1/devices/"), 401, LOGOUT)
    refused(lambda: student.delete(f"/api/v1/devices/{student.device_id}/"), 401, LOGOUT)


# --- expiry -----------------------------------------------------------------------------------------


def test_idle_expiry_counts_from_the_last_request(student_factory, refused):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as traveller:
        student = student_factory()
        traveller.shift(6 * DAY)
        assert student.get(SESSION).status_code == 200
        traveller.shift(6 * DAY)
        assert student.get(SESSION).status_code == 200
        traveller.shift(7 * DAY - dt.timedelta(seconds=1))
        assert student.get(SESSION).status_code == 200
        traveller.shift(7 * DAY)
        refused(lambda: student.get(SESSION), 401, IDLE)
        # It stays expired; a new login on the same device starts afresh.
        refused(lambda: student.get(SESSION), 401, IDLE)
        assert student.login().status_code == 200
        assert student.get(SESSION).status_code == 200


def test_lifetime_expiry_for_an_active_session(student_factory, refused):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as traveller:
        student = student_factory()
        expires = student.get(SESSION).json()["expires_at"]
        assert dt.datetime.fromisoformat(expires.replace("Z", "+00:00")) == start + 30 * DAY
        for _ in range(4):
            traveller.shift(6 * DAY)
            assert student.get(SESSION).status_code == 200
        traveller.move_to(start + 30 * DAY - dt.timedelta(seconds=1))
        assert student.get(SESSION).status_code == 200
        traveller.move_to(start + 30 * DAY)
        refused(lambda: student.get(SESSION), 401, LIFETIME)


def test_lifetime_wins_over_idle(student_factory, refused):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as traveller:
        student = student_factory()
        traveller.shift(31 * DAY)
        refused(lambda: student.get(SESSION), 401, LIFETIME)


def test_expiry_is_enforced_after_a_redis_wipe(student_factory):
    """A cold cache is rebuilt from the database: the expiry stays, the database path decides."""
    start = timezone.now()
    with time_machine.travel(start, tick=False) as traveller:
        student = student_factory()
        traveller.shift(8 * DAY)
        wipe_player_keys(student.player_id)
        response = student.get(SESSION)
        assert response.json() == IDLE
        assert student.get(SESSION).json() == IDLE


# --- the order of states -------------------------------------------------------------------------------


def test_revoked_outranks_replaced(student, refused):
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    services.device_revoke(
        device_pk=AuthorizedDevice.objects.get(device_id=student.device_id).pk, actor=None, reason="x"
    )
    refused(lambda: student.get(SESSION), 401, REVOKED)
    assert tablet.get(SESSION).status_code == 200


def test_revoked_outranks_ended(student, refused):
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    assert tablet.post("/api/v1/auth/logout/").status_code == 204
    assert student.login().status_code == 200
    assert student.delete(f"/api/v1/devices/{tablet.device_id}/").status_code == 204
    refused(lambda: tablet.get(SESSION), 401, REVOKED)


def test_replaced_outranks_expired(student_factory, refused):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as traveller:
        student = student_factory()
        tablet = student.on_device()
        assert tablet.login().status_code == 200
        traveller.shift(31 * DAY)
        refused(lambda: student.get(SESSION), 401, REPLACED)


@pytest.mark.parametrize("days", [8, 31])
def test_ended_outranks_expired(student_factory, refused, days):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as traveller:
        student = student_factory()
        assert student.post("/api/v1/auth/logout/").status_code == 204
        traveller.shift(days * DAY)
        refused(lambda: student.get(SESSION), 401, LOGOUT)


@pytest.mark.parametrize("days", [8, 31])
def test_ended_outranks_expired_after_a_rebuild(student_factory, days):
    """A rebuilt cache must still know the ended session, even once its lifetime is over."""
    start = timezone.now()
    with time_machine.travel(start, tick=False) as traveller:
        student = student_factory()
        assert student.post("/api/v1/auth/logout/").status_code == 204
        traveller.shift(days * DAY)
        wipe_player_keys(student.player_id)
        assert student.get(SESSION).json() == LOGOUT  # served by the database, hash rebuilt
        assert student.get(SESSION).json() == LOGOUT  # served by the rebuilt hash


# --- device binding ---------------------------------------------------------------------------------


def test_mismatch_for_a_live_session(student, refused):
    thief = student.on_device()
    thief.token = student.token
    refused(lambda: thief.get(SESSION), 403, MISMATCH)
    # The mismatch ends nothing: the real device carries on.
    assert student.get(SESSION).status_code == 200


def test_no_mismatch_for_an_ended_session(student, refused):
    thief = student.on_device()
    thief.token = student.token
    assert student.post("/api/v1/auth/logout/").status_code == 204
    refused(lambda: thief.get(SESSION), 401, LOGOUT)


def test_no_mismatch_for_a_replaced_session(student, refused):
    thief = student.on_device()
    thief.token = student.token
    assert student.on_device().login().status_code == 200
    refused(lambda: thief.get(SESSION), 401, REPLACED)


def test_no_mismatch_for_an_expired_session(student_factory, refused):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as traveller:
        student = student_factory()
        thief = student.on_device()
        thief.token = student.token
        traveller.shift(8 * DAY)
        refused(lambda: thief.get(SESSION), 401, IDLE)


# --- the login's password check ---------------------------------------------------------------------


def test_a_login_never_rewrites_the_stored_hash(student):
    """An outdated hash is not upgraded at login: that would read as a password change."""
    user = user_of(student)
    old_hash = make_password(student.password, hasher="pbkdf2_sha256")
    get_user_model().objects.filter(pk=user.pk).update(password=old_hash)  # no signal: a legacy row
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    assert user_of(student).password == old_hash
    # The phone's session was replaced by the login, not ended by a "password change".
    assert student.get(SESSION).json() == REPLACED
    assert tablet.get(SESSION).status_code == 200
    assert not PlayerSession.objects.filter(player_id=student.player_id, end_reason="password_changed").exists()


# --- a deleted account ------------------------------------------------------------------------------


def test_a_deleted_account_is_refused_on_its_next_request(student, hot_path):
    """A superuser may delete the user (support cannot): the cached session must not outlive it."""
    user_of(student).delete()
    for path in (SESSION, "/api/v1/profile/", "/api/v1/devices/"):
        response = student.get(path)
        assert response.status_code == 401, (path, response.content)
        assert response.json()["code"] == "not_authenticated"


def test_the_session_body_is_the_same_on_both_paths(student_factory, settings):
    student = student_factory(login=False)
    assert student.login(device_name="Amira's phone", platform="android").status_code == 200
    cached = student.get(SESSION).json()
    settings.MEMORA_HOT_STATE = "database"
    from_database = student.get(SESSION).json()
    assert set(cached) == {"device", "started_at", "expires_at", "last_seen_at"}
    assert cached["device"] == {"device_id": student.device_id, "name": "Amira's phone", "platform": "android"}
    for body in (cached, from_database):
        for field in ("started_at", "expires_at", "last_seen_at"):
            assert body[field].endswith("Z")
    assert {k: v for k, v in from_database.items() if k != "last_seen_at"} == {
        k: v for k, v in cached.items() if k != "last_seen_at"
    }


def test_a_login_through_the_service_replaces_the_live_session():
    """The service alone (no HTTP, one shared hash): the second device's login ends the first's."""
    from devices import verification
    from devices.tests.factories import logged_in
    from devices.tokens import token_parse

    first = logged_in()
    second = logged_in(profile=first.profile)
    assert token_parse(second.token) is not None
    with pytest.raises(Exception) as refused:
        verification.verify(authorization=f"Bearer {first.token}", device_header=str(first.device.device_id))
    assert getattr(refused.value, "code", None) == "session_replaced"
    principal = verification.verify(authorization=f"Bearer {second.token}", device_header=str(second.device.device_id))
    assert principal.session_id == second.session.pk
