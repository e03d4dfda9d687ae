"""Device rules: the limit under concurrent logins, refused logins that change nothing, support's
revocation and re-allowing, self-service removal with its cooldown, and the device list."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import time_machine
from django.utils import timezone

from core.errors import ApiError
from devices import services
from devices.models import AuditAction, AuthorizedDevice, DeviceAuditEntry, PlayerAuthState, PlayerSession
from devices.tests.factories import StaffFactory
from devices.tests.helpers import generation, login_from_new_device, run_in_threads, snapshot
from players.models import PlayerProfile

pytestmark = pytest.mark.django_db(transaction=True)

DAY = 24 * 3600


def active_device_ids(player_id):
    return set(
        AuthorizedDevice.objects.filter(player_id=player_id, revoked_at__isnull=True).values_list(
            "device_id", flat=True
        )
    )


def assert_code(response, status, code):
    assert response.status_code == status, response.content
    assert response.json()["code"] == code, response.json()
    return response.json()


# --- the limit under concurrency ------------------------------------------------------------------


def test_twenty_parallel_http_logins_from_new_devices_leave_two(student_factory):
    student = student_factory(login=False)
    results = run_in_threads(20, lambda _i: login_from_new_device(student.username, student.password))
    assert sorted(results) == [200] * 2 + [403] * 18, results
    assert len(active_device_ids(student.player_id)) == 2
    assert PlayerSession.objects.filter(player_id=student.player_id, is_live=True).count() == 1
    # Two successful logins, two generations; the refused ones left no trace.
    assert generation(student.player_id) == 2
    assert DeviceAuditEntry.objects.filter(player_id=student.player_id, action=AuditAction.AUTHORIZED).count() == 2


def test_twenty_parallel_service_logins_with_a_device_already_in_use(student):
    profile = PlayerProfile.objects.get(pk=student.player_id)

    def work(_index: int) -> str:
        try:
            services.session_login(profile=profile, device_id=str(uuid.uuid4()), device_name=None, platform=None)
        except ApiError as error:
            return error.code
        return "ok"

    results = run_in_threads(20, work)
    assert sorted(results) == ["device_limit_reached"] * 19 + ["ok"], results
    assert len(active_device_ids(student.player_id)) == 2
    assert student.device_id in {str(d) for d in active_device_ids(student.player_id)}
    assert PlayerSession.objects.filter(player_id=student.player_id, is_live=True).count() == 1


# --- a refused login changes nothing ----------------------------------------------------------------


def test_a_login_refused_at_the_limit_changes_nothing(student):
    tablet = student.on_device()
    assert tablet.login(device_name="Tablet", platform="ios").status_code == 200
    before = snapshot(student.player_id)
    third = student.on_device()
    body = assert_code(third.login(device_name="Third"), 403, "device_limit_reached")
    assert body["detail"] == "This account is already used on 2 devices. Remove one to continue."
    assert [d["device_id"] for d in body["devices"]] == [student.device_id, tablet.device_id]
    assert set(body["devices"][1]) == {"device_id", "name", "platform", "last_seen_at"}
    assert body["devices"][1]["name"] == "Tablet"
    assert body["devices"][1]["platform"] == "ios"
    assert snapshot(student.player_id) == before
    assert tablet.get("/api/v1/session/").status_code == 200
    assert not AuthorizedDevice.objects.filter(device_id=third.device_id).exists()


def test_a_replacement_refused_by_the_cooldown_changes_nothing(student):
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    assert student.login().status_code == 200
    assert student.delete(f"/api/v1/devices/{tablet.device_id}/").status_code == 204
    laptop = student.on_device()
    assert laptop.login().status_code == 200
    before = snapshot(student.player_id)
    phone = student.on_device()
    body = assert_code(phone.login(replace_device_id=student.device_id), 403, "device_removal_cooldown")
    assert "next_allowed_at" in body
    assert snapshot(student.player_id) == before
    assert laptop.get("/api/v1/session/").status_code == 200


# --- support's revocation -----------------------------------------------------------------------------


def test_a_device_revoked_by_support_is_refused_until_allowed(student):
    agent = StaffFactory(username="agent")
    device = AuthorizedDevice.objects.get(player_id=student.player_id, device_id=student.device_id)
    before_gen = generation(student.player_id)
    assert services.device_revoke(device_pk=device.pk, actor=agent, reason="shared account") is True
    assert generation(student.player_id) == before_gen + 1
    # The session is refused on its very next request, and the slot is free.
    assert_code(student.get("/api/v1/session/"), 401, "device_revoked")
    assert active_device_ids(student.player_id) == set()
    audit = DeviceAuditEntry.objects.get(player_id=student.player_id, action=AuditAction.REVOKED)
    assert (audit.actor, audit.reason, audit.device_id) == (agent, "shared account", device.pk)
    # The device id cannot log in again, right password or not; revoking twice changes nothing.
    assert_code(student.login(), 403, "device_revoked")
    assert_code(student.login(), 403, "device_revoked")
    assert services.device_revoke(device_pk=device.pk, actor=agent, reason="again") is False
    # Another device takes the free slot.
    other = student.on_device()
    assert other.login().status_code == 200
    # Support re-allows it: it logs in again, taking a free slot.
    assert services.device_allow(device_pk=device.pk, actor=agent, reason="sorted out") is True
    assert services.device_allow(device_pk=device.pk, actor=agent) is False
    response = student.login()
    assert response.status_code == 200
    assert student.get("/api/v1/session/").status_code == 200
    assert len(active_device_ids(student.player_id)) == 2


def test_revoking_a_device_without_a_live_session_blocks_its_next_login(student):
    tablet = student.on_device()
    assert tablet.login().status_code == 200  # the phone's session is replaced
    phone = AuthorizedDevice.objects.get(player_id=student.player_id, device_id=student.device_id)
    services.device_revoke(device_pk=phone.pk, actor=None, reason="stolen")
    # Revoked outranks replaced for the phone's old token.
    assert_code(student.get("/api/v1/session/"), 401, "device_revoked")
    assert_code(student.login(), 403, "device_revoked")
    assert tablet.get("/api/v1/session/").status_code == 200


# --- self-service removal ------------------------------------------------------------------------------


def test_remove_another_device(student):
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    assert student.login().status_code == 200
    tablet_token = tablet.token
    before_gen = generation(student.player_id)
    response = student.delete(f"/api/v1/devices/{tablet.device_id}/")
    assert response.status_code == 204
    assert response.content == b""
    assert generation(student.player_id) == before_gen + 1
    assert active_device_ids(student.player_id) == {uuid.UUID(student.device_id)}
    entry = DeviceAuditEntry.objects.get(player_id=student.player_id, action=AuditAction.REMOVED)
    assert str(entry.device.device_id) == tablet.device_id
    # The removed device's (already replaced) token now reads as revoked.
    tablet.token = tablet_token
    assert_code(tablet.get("/api/v1/session/"), 401, "device_revoked")
    # A student's own removal only frees the slot: that device may log in again.
    assert tablet.login().status_code == 200


def test_removing_the_device_of_a_live_session_ends_it(student):
    """The session of a removed device is refused with device_revoked on its next request."""
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    session = PlayerSession.objects.get(player_id=student.player_id, is_live=True)
    services.device_remove_by_student(
        player_id=student.player_id, device_id=tablet.device_id, current_device_id=student.device_id
    )
    session.refresh_from_db()
    assert session.is_live is None
    assert session.end_reason == "device_revoked"
    assert_code(tablet.get("/api/v1/session/"), 401, "device_revoked")


def test_the_current_device_cannot_remove_itself(student):
    body = assert_code(student.delete(f"/api/v1/devices/{student.device_id}/"), 403, "permission_denied")
    assert body["detail"]
    assert student.get("/api/v1/session/").status_code == 200
    # Any spelling of the same id is the same device.
    assert_code(student.delete(f"/api/v1/devices/{student.device_id.upper()}/"), 403, "permission_denied")


def test_unknown_and_foreign_devices_are_not_found(student, student_factory):
    assert_code(student.delete(f"/api/v1/devices/{uuid.uuid4()}/"), 404, "not_found")
    other = student_factory()
    assert_code(student.delete(f"/api/v1/devices/{other.device_id}/"), 404, "not_found")
    assert other.get("/api/v1/session/").status_code == 200
    assert len(active_device_ids(other.player_id)) == 1


def test_a_removed_device_is_not_found_the_second_time(student):
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    assert student.login().status_code == 200
    assert student.delete(f"/api/v1/devices/{tablet.device_id}/").status_code == 204
    assert_code(student.delete(f"/api/v1/devices/{tablet.device_id}/"), 404, "not_found")


@pytest.mark.parametrize("device_id", ["nope", "1234", str(uuid.uuid1()), "%00", "x" * 300, "' or 1=1 --"])
def test_a_malformed_device_id_is_a_validation_error(student, device_id):
    result = assert_code(student.delete(f"/api/v1/devices/{device_id}/"), 400, "validation_error")
    assert "device_id" in result["errors"]


def test_a_second_removal_waits_for_the_cooldown(student):
    start = timezone.now()
    with time_machine.travel(start, tick=True) as traveller:
        tablet = student.on_device()
        assert tablet.login().status_code == 200
        assert student.login().status_code == 200
        assert student.delete(f"/api/v1/devices/{tablet.device_id}/").status_code == 204
        removed_at = PlayerAuthState.objects.get(player_id=student.player_id).last_removal_at
        laptop = student.on_device()
        assert laptop.login().status_code == 200
        assert student.login().status_code == 200

        body = assert_code(student.delete(f"/api/v1/devices/{laptop.device_id}/"), 403, "device_removal_cooldown")
        assert body["detail"] == "You can remove a device once every 30 days."
        next_allowed = dt.datetime.fromisoformat(body["next_allowed_at"].replace("Z", "+00:00"))
        assert next_allowed == removed_at + dt.timedelta(days=30)
        devices = student.get("/api/v1/devices/").json()
        assert devices["removal_allowed_at"] == body["next_allowed_at"]

        traveller.move_to(removed_at + dt.timedelta(days=30) - dt.timedelta(seconds=5))
        assert student.login().status_code == 200  # the old session has expired meanwhile
        assert_code(student.delete(f"/api/v1/devices/{laptop.device_id}/"), 403, "device_removal_cooldown")

        traveller.move_to(removed_at + dt.timedelta(days=30, seconds=1))
        assert student.delete(f"/api/v1/devices/{laptop.device_id}/").status_code == 204
        assert active_device_ids(student.player_id) == {uuid.UUID(student.device_id)}


# --- the device list -----------------------------------------------------------------------------------


def test_the_device_list(student_factory):
    student = student_factory(login=False)
    assert student.login(device_name="Amira's phone", platform="android").status_code == 200
    tablet = student.on_device()
    assert tablet.login(device_name="Tablet", platform="ios").status_code == 200
    response = tablet.get("/api/v1/devices/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "removal_allowed_at"}
    results = body["results"]
    assert [d["device_id"] for d in results] == [student.device_id, tablet.device_id]
    for device in results:
        assert set(device) == {"device_id", "name", "platform", "authorized_at", "last_seen_at", "is_current"}
        assert device["authorized_at"].endswith("Z")
        assert device["last_seen_at"].endswith("Z")
    assert [(d["name"], d["platform"], d["is_current"]) for d in results] == [
        ("Amira's phone", "android", False),
        ("Tablet", "ios", True),
    ]
    # No removal yet: allowed now.
    allowed = dt.datetime.fromisoformat(body["removal_allowed_at"].replace("Z", "+00:00"))
    assert abs((allowed - timezone.now()).total_seconds()) < 60


def test_the_device_list_shows_only_this_students_active_devices(student, student_factory):
    other = student_factory()
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    assert student.login().status_code == 200
    assert student.delete(f"/api/v1/devices/{tablet.device_id}/").status_code == 204
    results = student.get("/api/v1/devices/").json()["results"]
    assert [d["device_id"] for d in results] == [student.device_id]
    assert results[0]["is_current"] is True
    assert [d["device_id"] for d in other.get("/api/v1/devices/").json()["results"]] == [other.device_id]
