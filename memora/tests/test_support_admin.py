"""The support admin: search, revoke and allow devices, end sessions, service keys, permissions.

Admin requests run their services' after-commit work (the Redis update) through
``django_capture_on_commit_callbacks(execute=True)``, as a real commit would, so that the student's
next API request is judged from a warm cache.
"""

from __future__ import annotations

import importlib
import re
import uuid

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from devices import servicekeys, services, tokens
from devices.admin import device_status
from devices.models import AuditAction, AuthorizedDevice, DeviceAuditEntry, PlayerSession, ServiceApiKey
from devices.tests.factories import StaffFactory
from memora.tests.support import staff_client, support_group_ensure

pytestmark = pytest.mark.django_db

DEVICES = "/admin/devices/authorizeddevice/"
STUDENTS = "/admin/players/playerprofile/"
KEY_RE = re.compile(r"mks_[A-Za-z0-9]{12}_[A-Za-z0-9_-]{43,86}")


@pytest.fixture
def support() -> tuple[Client, User]:
    return staff_client("agent_smith", support=True)


@pytest.fixture
def support_client(support):
    return support[0]


def device_of(student) -> AuthorizedDevice:
    return AuthorizedDevice.objects.get(player_id=student.player_id, device_id=student.device_id)


def warm(student) -> None:
    """One request, so that the student's cache is built and the next check is the warm path."""
    assert student.get("/api/v1/session/").status_code == 200


def run_action(client: Client, url: str, action: str, pks: list[int], captured, **extra):
    with captured(execute=True):
        return client.post(url, {"action": action, ACTION_CHECKBOX_NAME: pks, **extra}, follow=True)


def test_support_group_holds_only_what_support_needs():
    perms = set(support_group_ensure().permissions.values_list("content_type__app_label", "codename"))
    assert perms == {
        ("players", "view_playerprofile"),
        ("devices", "view_authorizeddevice"),
        ("devices", "change_authorizeddevice"),
        ("devices", "view_playersession"),
        ("devices", "view_deviceauditentry"),
        ("wallets", "view_playerwallet"),
        ("wallets", "change_playerwallet"),  # the streak restore action
        ("wallets", "view_ledgerevent"),
    }


def test_support_finds_a_student_by_username_or_display_name(support_client, student_factory):
    wanted = student_factory(username=f"amira_{uuid.uuid4().hex[:6]}")
    other = student_factory(username=f"bilal_{uuid.uuid4().hex[:6]}")

    by_username = support_client.get(STUDENTS, {"q": wanted.username})
    assert by_username.status_code == 200
    assert wanted.username in by_username.text
    assert other.username not in by_username.text

    by_display_name = support_client.get(STUDENTS, {"q": other.username.title()})
    assert other.username in by_display_name.text
    assert wanted.username not in by_display_name.text

    page = support_client.get(f"{STUDENTS}{wanted.player_id}/change/")
    assert page.status_code == 200
    assert wanted.device_id in page.text  # the devices inline
    session = PlayerSession.objects.get(player_id=wanted.player_id)
    assert session.token_digest not in page.text
    assert wanted.token not in page.text


def test_device_list_shows_status_and_searches_by_username_name_and_device_id(support_client, student_factory):
    student = student_factory()
    tablet = student.on_device()
    assert tablet.login(device_name="Blue tablet", platform="ios").status_code == 200
    services.device_revoke(device_pk=device_of(student).pk, actor=None, reason="lost")
    other = student_factory()

    for term in (student.username, "Blue tablet", tablet.device_id, tablet.device_id[:8]):
        page = support_client.get(DEVICES, {"q": term})
        assert page.status_code == 200
        assert tablet.device_id in page.text, term
        assert other.device_id not in page.text, term
    page = support_client.get(DEVICES, {"q": student.username})
    assert sorted(device_status(d) for d in page.context["cl"].result_list) == ["active", "blocked"]
    assert "blocked" in page.text
    blocked = support_client.get(DEVICES, {"status": "blocked"})
    assert [d.device_id for d in blocked.context["cl"].result_list] == [uuid.UUID(student.device_id)]


def test_revoke_devices_asks_for_a_reason_then_revokes(support, student, django_capture_on_commit_callbacks):
    client, agent = support
    tablet = student.on_device()
    assert tablet.login(device_name="Tablet").status_code == 200
    warm(tablet)
    device = device_of(tablet)

    form = client.post(DEVICES, {"action": "revoke_devices", "index": 0, ACTION_CHECKBOX_NAME: [device.pk]})
    assert form.status_code == 200
    assert "admin/devices/authorizeddevice/revoke_devices.html" in [t.name for t in form.templates]
    assert 'name="reason"' in form.text

    for bad in ("", "   ", "x" * 201):
        refused = run_action(
            client,
            DEVICES,
            "revoke_devices",
            [device.pk],
            django_capture_on_commit_callbacks,
            apply="Revoke",
            reason=bad,
        )
        assert refused.status_code == 200
        assert refused.context["form"].errors["reason"]
    device.refresh_from_db()
    assert device.revoked_at is None

    done = run_action(
        client,
        DEVICES,
        "revoke_devices",
        [device.pk],
        django_capture_on_commit_callbacks,
        apply="Revoke",
        reason="Reported stolen by the parent",
    )
    assert done.status_code == 200
    assert "Revoked 1 device(s)" in done.text

    device.refresh_from_db()
    assert device.revoked_at is not None
    assert device.login_blocked is True
    assert device.revoked_by == agent
    assert device.revoke_reason == "Reported stolen by the parent"

    refused = tablet.get("/api/v1/session/")
    assert refused.status_code == 401
    assert refused.json()["code"] == "device_revoked"

    entry = DeviceAuditEntry.objects.get(device=device, action=AuditAction.REVOKED)
    assert entry.actor == agent
    assert entry.reason == "Reported stolen by the parent"
    assert "Reported stolen by the parent" in client.get(f"{STUDENTS}{student.player_id}/change/").text

    # The slot is free for a new device, and the revoked one stays refused at login.
    assert student.on_device().login().status_code == 200
    again = tablet.login()
    assert again.status_code == 403
    assert again.json()["code"] == "device_revoked"


def test_allow_devices_lets_a_revoked_device_log_in_again(support, student, django_capture_on_commit_callbacks):
    client, agent = support
    device = device_of(student)
    services.device_revoke(device_pk=device.pk, actor=agent, reason="lost")
    assert student.login().json()["code"] == "device_revoked"

    done = run_action(client, DEVICES, "allow_devices", [device.pk], django_capture_on_commit_callbacks, index=0)
    assert "Allowed 1 device(s)" in done.text

    device.refresh_from_db()
    assert device.login_blocked is False
    assert DeviceAuditEntry.objects.filter(device=device, action=AuditAction.ALLOWED, actor=agent).exists()
    assert student.login().status_code == 200


def test_end_sessions_ends_the_students_live_session(support, student, django_capture_on_commit_callbacks):
    client, agent = support
    warm(student)

    done = run_action(
        client, STUDENTS, "end_sessions", [student.player_id], django_capture_on_commit_callbacks, index=0
    )
    assert "Ended 1 live session(s) of 1 student(s)" in done.text

    refused = student.get("/api/v1/session/")
    assert refused.status_code == 401
    assert refused.json()["code"] == "session_ended"
    assert refused.json()["reason"] == "ended_by_support"
    assert DeviceAuditEntry.objects.filter(
        player_id=student.player_id, action=AuditAction.SESSIONS_ENDED, actor=agent
    ).exists()


def test_staff_without_the_support_group_gets_403(student, django_capture_on_commit_callbacks):
    client, _ = staff_client("intern")
    device = device_of(student)
    for url in (DEVICES, STUDENTS, f"{STUDENTS}{student.player_id}/change/", "/admin/devices/playersession/"):
        assert client.get(url).status_code == 403, url
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            DEVICES, {"action": "revoke_devices", ACTION_CHECKBOX_NAME: [device.pk], "apply": "1", "reason": "no"}
        )
    assert response.status_code == 403
    device.refresh_from_db()
    assert device.revoked_at is None


def test_view_only_staff_can_look_but_not_run_actions(student, django_capture_on_commit_callbacks):
    client, _ = staff_client(
        "auditor", perms=("view_playerprofile", "view_authorizeddevice", "view_playersession", "view_deviceauditentry")
    )
    warm(student)
    device = device_of(student)
    page = client.get(DEVICES)
    assert page.status_code == 200
    assert "revoke_devices" not in page.text
    assert "end_sessions" not in client.get(STUDENTS).text

    run_action(
        client, DEVICES, "revoke_devices", [device.pk], django_capture_on_commit_callbacks, apply="1", reason="nope"
    )
    run_action(client, STUDENTS, "end_sessions", [student.player_id], django_capture_on_commit_callbacks, index=0)
    device.refresh_from_db()
    assert device.revoked_at is None
    assert student.get("/api/v1/session/").status_code == 200


def test_support_cannot_reach_service_keys_or_users(support_client):
    assert support_client.get("/admin/devices/serviceapikey/").status_code == 403
    assert support_client.get("/admin/auth/user/").status_code == 403


def test_session_and_audit_pages_never_show_a_token_or_digest(support_client, student):
    session = PlayerSession.objects.get(player_id=student.player_id)
    for url in (
        "/admin/devices/playersession/",
        f"/admin/devices/playersession/{session.pk}/change/",
        "/admin/devices/deviceauditentry/",
        f"{DEVICES}{device_of(student).pk}/change/",
    ):
        page = support_client.get(url)
        assert page.status_code == 200, url
        assert session.token_digest not in page.text, url
        assert student.token not in page.text, url


def test_service_key_admin_shows_the_key_once_and_stores_only_its_digest(django_capture_on_commit_callbacks):
    admin_user = StaffFactory(username="root_admin", is_superuser=True)
    client = Client()
    client.force_login(admin_user)

    form = client.get("/admin/devices/serviceapikey/add/")
    assert form.status_code == 200
    assert 'type="checkbox" name="scopes" value="award_xp"' in form.text
    assert 'value="restore_streak"' in form.text

    created = client.post(
        "/admin/devices/serviceapikey/add/", {"name": "School platform", "scopes": ["award_xp"]}, follow=True
    )
    assert created.status_code == 200
    shown = KEY_RE.findall(created.text)
    assert len(shown) == 1
    raw = shown[0]

    key = ServiceApiKey.objects.get()
    assert key.digest == tokens.digest(raw)
    assert key.scopes == ["award_xp"]
    assert key.created_by == admin_user
    assert raw.startswith(f"mks_{key.prefix}_")
    stored = [str(v) for v in ServiceApiKey.objects.values_list(named=False).get()]
    assert not any(raw in v for v in stored)
    assert not LogEntry.objects.filter(object_repr__contains=raw).exists()
    principal = servicekeys.service_key_verify(raw=raw)
    assert principal is not None
    assert principal.scopes == frozenset({"award_xp"})

    for url in ("/admin/devices/serviceapikey/", f"/admin/devices/serviceapikey/{key.pk}/change/"):
        page = client.get(url)
        assert page.status_code == 200
        assert raw not in page.text
        assert key.digest not in page.text
        assert f"mks_{key.prefix}_" in page.text

    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            "/admin/devices/serviceapikey/", {"action": "revoke_keys", "index": 0, ACTION_CHECKBOX_NAME: [key.pk]}
        )
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert servicekeys.service_key_verify(raw=raw) is None


def test_service_key_needs_a_scope(django_capture_on_commit_callbacks):
    admin_user = StaffFactory(username="root_admin2", is_superuser=True)
    client = Client()
    client.force_login(admin_user)
    refused = client.post("/admin/devices/serviceapikey/add/", {"name": "No scopes"})
    assert refused.status_code == 200
    assert "scopes" in refused.context["adminform"].form.errors
    assert not ServiceApiKey.objects.exists()


def test_the_support_role_migration_is_idempotent():
    migration = importlib.import_module("memora.migrations.0001_support_role")
    state = MigrationExecutor(connection).loader.project_state(("memora", "0001_support_role"))
    before = set(support_group_ensure().permissions.values_list("codename", flat=True))
    with connection.schema_editor() as editor:
        migration.support_role_ensure(state.apps, editor)
        migration.support_role_ensure(state.apps, editor)
    group = Group.objects.get(name="Support")
    assert set(group.permissions.values_list("codename", flat=True)) == before
    assert Group.objects.filter(name="Support").count() == 1
