"""Support reinstates a streak in the admin and answers "why did my streak reset?" from the
student overview page."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import time_machine
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import call_command
from django.test import Client

from devices import services
from devices.models import AuditAction, AuthorizedDevice, DeviceAuditEntry, PlayerSession
from memora.tests.support import staff_client
from wallets.models import EventKind, LedgerEvent
from wallets.tests.factories import lesson_completed

pytestmark = pytest.mark.django_db(transaction=True)

STUDENTS = "/admin/players/playerprofile/"
DAY0 = dt.datetime(2026, 11, 2, 15, 0, tzinfo=dt.UTC)


def practise(student, day: int) -> None:
    with time_machine.travel(DAY0 + dt.timedelta(days=day), tick=False):
        lesson_completed(player_id=student.player_id, lesson_id="daily", score=None)


def test_support_restores_a_streak_and_sees_it_on_the_overview(student_factory, settings):
    settings.MEMORA_STREAK_FREEZE_MAX = 0
    with time_machine.travel(DAY0, tick=False):
        student = student_factory()
    for day in (0, 1, 2, 3, 4, 6):  # day 5 missed: the streak of 5 is reset to 1 on day 6
        practise(student, day)
    client, agent = staff_client(f"agent_{uuid.uuid4().hex[:6]}", support=True)
    with time_machine.travel(DAY0 + dt.timedelta(days=6, hours=1), tick=False):
        form = client.post(STUDENTS, {"action": "restore_streak", ACTION_CHECKBOX_NAME: [student.player_id]})
        assert form.status_code == 200
        assert "Reason" in form.text
        done = client.post(
            STUDENTS,
            {
                "action": "restore_streak",
                ACTION_CHECKBOX_NAME: [student.player_id],
                "apply": "1",
                "reason": "App outage",
            },
            follow=True,
        )
        assert "streak restored from 1 to 6" in done.text
        overview = client.get(f"{STUDENTS}{student.player_id}/overview/")
    assert overview.status_code == 200
    page = overview.text
    assert "streak_restored" in page and "App outage" in page  # the pending ledger event
    call_command("sync_wallets", "--no-progress")
    event = LedgerEvent.objects.get(player_id=student.player_id, kind=EventKind.STREAK_RESTORED)
    assert event.actor == f"admin:{agent.username}"
    with time_machine.travel(DAY0 + dt.timedelta(days=6, hours=2), tick=False):
        page = client.get(f"{STUDENTS}{student.player_id}/overview/").text
    assert f"admin:{agent.username}" in page  # who, in the restores table
    for section in ("Wallet and streak", "Recent ledger", "Authorized devices", "Sessions", "Device audit"):
        assert section in page


def test_restore_without_a_broken_streak_says_so_and_needs_the_permission(student):
    client, _ = staff_client(f"agent_{uuid.uuid4().hex[:6]}", support=True)
    done = client.post(
        STUDENTS,
        {"action": "restore_streak", ACTION_CHECKBOX_NAME: [student.player_id], "apply": "1", "reason": "asked"},
        follow=True,
    )
    assert "no broken streak to restore" in done.text
    viewer, _ = staff_client(f"viewer_{uuid.uuid4().hex[:6]}", perms=("view_playerprofile",))
    refused = viewer.post(
        STUDENTS,
        {"action": "restore_streak", ACTION_CHECKBOX_NAME: [student.player_id], "apply": "1", "reason": "x"},
    )
    assert not LedgerEvent.objects.filter(kind=EventKind.STREAK_RESTORED).exists()
    # A viewer is offered no action: the POST only shows the change list again, with no restore in it.
    assert refused.status_code == 200
    assert refused.template_name[-1] == "admin/change_list.html"
    assert "restore_streak" not in refused.text


# --- the overview's actions ------------------------------------------------------------------------


def overview_of(student) -> str:
    return f"{STUDENTS}{student.player_id}/overview/"


def device_of(student) -> AuthorizedDevice:
    return AuthorizedDevice.objects.get(player_id=student.player_id, device_id=student.device_id)


def test_overview_keeps_revoked_devices_struck_with_who_and_why(student):
    client, agent = staff_client(f"agent_{uuid.uuid4().hex[:6]}", support=True)
    tablet = student.on_device().login_through_service(device_name="Kitchen tablet")
    services.device_revoke(device_pk=device_of(tablet).pk, actor=agent, reason="Stolen at school")

    page = client.get(overview_of(student)).text
    assert f"<s><code>{tablet.device_id}</code></s>" in page
    assert "<s>Kitchen tablet</s>" in page
    assert agent.username in page and "Stolen at school" in page
    blocked = device_of(tablet)
    assert f"{overview_of(student)}devices/{blocked.pk}/allow/" in page
    active = device_of(student)
    assert f"<code>{student.device_id}</code>" in page  # not struck
    assert f"{overview_of(student)}devices/{active.pk}/revoke/" in page


def test_support_revokes_a_device_from_the_overview(student, django_capture_on_commit_callbacks):
    client, agent = staff_client(f"agent_{uuid.uuid4().hex[:6]}", support=True)
    tablet = student.on_device().login_through_service(device_name="Kitchen tablet")
    assert tablet.get("/api/v1/session/").status_code == 200
    device = device_of(tablet)
    url = f"{overview_of(student)}devices/{device.pk}/revoke/"

    form = client.get(url)
    assert form.status_code == 200
    assert 'name="reason"' in form.text and tablet.device_id in form.text
    for bad in ("", "   ", "x" * 201):
        refused = client.post(url, {"reason": bad})
        assert refused.status_code == 200
        assert refused.context["form"].errors["reason"]
    device.refresh_from_db()
    assert device.revoked_at is None

    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(url, {"reason": "Reported stolen by the parent"})
    assert done.status_code == 302
    assert done["Location"] == overview_of(student)
    page = client.get(done["Location"]).text
    assert "Device “Kitchen tablet” of" in page and "revoked" in page
    assert "device revoked by support" in page  # the audit table

    device.refresh_from_db()
    assert (device.login_blocked, device.revoked_by, device.revoke_reason) == (
        True,
        agent,
        "Reported stolen by the parent",
    )
    entry = DeviceAuditEntry.objects.get(device=device, action=AuditAction.REVOKED)
    assert (entry.actor, entry.reason) == (agent, "Reported stolen by the parent")
    refused = tablet.get("/api/v1/session/")
    assert (refused.status_code, refused.json()["code"]) == (401, "device_revoked")

    again = client.post(url, {"reason": "twice"}, follow=True)
    assert "was already revoked" in again.text
    assert DeviceAuditEntry.objects.filter(device=device, action=AuditAction.REVOKED).count() == 1


def test_support_allows_a_device_again_from_the_overview(student, django_capture_on_commit_callbacks):
    client, agent = staff_client(f"agent_{uuid.uuid4().hex[:6]}", support=True)
    device = device_of(student)
    services.device_revoke(device_pk=device.pk, actor=agent, reason="lost")
    assert student.login().json()["code"] == "device_revoked"
    url = f"{overview_of(student)}devices/{device.pk}/allow/"

    form = client.get(url)
    assert form.status_code == 200
    assert 'name="reason"' in form.text  # optional: the audit keeps it when given
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(url, {"reason": "Found behind the sofa"}, follow=True)
    assert done.redirect_chain == [(overview_of(student), 302)]
    assert "allowed again" in done.text

    device.refresh_from_db()
    assert device.login_blocked is False
    entry = DeviceAuditEntry.objects.get(device=device, action=AuditAction.ALLOWED)
    assert (entry.actor, entry.reason) == (agent, "Found behind the sofa")
    assert student.login().status_code == 200


def test_support_ends_the_sessions_from_the_overview(student, django_capture_on_commit_callbacks):
    client, agent = staff_client(f"agent_{uuid.uuid4().hex[:6]}", support=True)
    assert student.get("/api/v1/session/").status_code == 200
    url = f"{overview_of(student)}end-sessions/"

    form = client.get(url)
    assert form.status_code == 200
    assert "Live sessions" in form.text
    assert student.get("/api/v1/session/").status_code == 200  # a GET changes nothing
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(url, follow=True)
    assert done.redirect_chain == [(overview_of(student), 302)]
    assert "Ended 1 live session(s)" in done.text

    refused = student.get("/api/v1/session/").json()
    assert (refused["code"], refused["reason"]) == ("session_ended", "ended_by_support")
    assert DeviceAuditEntry.objects.filter(
        player_id=student.player_id, action=AuditAction.SESSIONS_ENDED, actor=agent
    ).exists()


def test_support_restores_the_streak_from_the_overview(student_factory, settings):
    settings.MEMORA_STREAK_FREEZE_MAX = 0
    with time_machine.travel(DAY0, tick=False):
        student = student_factory()
    for day in (0, 1, 2, 3, 4, 6):
        practise(student, day)
    client, agent = staff_client(f"agent_{uuid.uuid4().hex[:6]}", support=True)
    url = f"{overview_of(student)}restore-streak/"
    with time_machine.travel(DAY0 + dt.timedelta(days=6, hours=1), tick=False):
        form = client.get(url)
        assert form.status_code == 200
        assert 'name="reason"' in form.text and "Current streak" in form.text
        assert client.post(url, {"reason": ""}).context["form"].errors["reason"]
        done = client.post(url, {"reason": "App outage"}, follow=True)
        assert done.redirect_chain == [(overview_of(student), 302)]
        assert "streak restored from 1 to 6" in done.text
        assert student.get("/api/v1/wallet/").json()["current_streak"] == 6
        again = client.post(url, {"reason": "App outage"}, follow=True)
    assert "no broken streak to restore" in again.text
    call_command("sync_wallets", "--no-progress")
    event = LedgerEvent.objects.get(player_id=student.player_id, kind=EventKind.STREAK_RESTORED)
    assert (event.actor, event.reason) == (f"admin:{agent.username}", "App outage")


ACTIONS = (
    "devices/{device}/revoke/",
    "devices/{device}/allow/",
    "end-sessions/",
    "restore-streak/",
    "clear-login-locks/",
)


def test_view_only_staff_see_no_action_and_are_refused_each(student, django_capture_on_commit_callbacks):
    viewer, _ = staff_client(
        f"viewer_{uuid.uuid4().hex[:6]}",
        perms=("view_playerprofile", "view_authorizeddevice", "view_playersession", "view_deviceauditentry"),
    )
    device = device_of(student)
    page = viewer.get(overview_of(student))
    assert page.status_code == 200
    for label in ("Revoke…", "Allow again…", "End every session…", "Restore the streak…", "Clear every login lock"):
        assert label not in page.text
    for action in ACTIONS:
        url = overview_of(student) + action.format(device=device.pk)
        assert viewer.get(url).status_code == 403, url
        with django_capture_on_commit_callbacks(execute=True):
            assert viewer.post(url, {"reason": "no"}).status_code == 403, url
    device.refresh_from_db()
    assert device.revoked_at is None
    assert not DeviceAuditEntry.objects.filter(player_id=student.player_id).exclude(action="authorized").exists()
    assert student.get("/api/v1/session/").status_code == 200


def test_device_actions_without_the_wallet_permission_offer_no_restore(student):
    client, _ = staff_client(f"devdesk_{uuid.uuid4().hex[:6]}", perms=("view_playerprofile", "change_authorizeddevice"))
    page = client.get(overview_of(student)).text
    assert "Revoke…" in page and "End every session…" in page
    assert "Restore the streak…" not in page
    assert client.get(f"{overview_of(student)}restore-streak/").status_code == 403


def test_a_device_of_another_student_is_not_found_through_this_one(student_factory):
    client, _ = staff_client(f"agent_{uuid.uuid4().hex[:6]}", support=True)
    first, second = student_factory(), student_factory()
    theirs = device_of(second)
    url = f"{overview_of(first)}devices/{theirs.pk}/revoke/"
    assert client.get(url).status_code == 404
    assert client.post(url, {"reason": "wrong student"}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert client.get(f"{STUDENTS}999999999/overview/end-sessions/").status_code == 404


def test_overview_actions_need_the_csrf_token_and_a_get_or_post(student):
    plain, agent = staff_client(f"agent_{uuid.uuid4().hex[:6]}", support=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent)
    device = device_of(student)
    url = f"{overview_of(student)}devices/{device.pk}/revoke/"
    assert client.post(url, {"reason": "no token"}).status_code == 403
    assert plain.put(url).status_code == 405
    device.refresh_from_db()
    assert device.revoked_at is None


def test_pages_speak_the_support_agents_words(student):
    client, _ = staff_client(f"agent_{uuid.uuid4().hex[:6]}", support=True)
    device = device_of(student)
    session = PlayerSession.objects.get(player_id=student.player_id)
    pages = {
        STUDENTS: "Find a student",
        f"{STUDENTS}{student.player_id}/change/": "<h1>Student</h1>",
        "/admin/devices/authorizeddevice/": "<h1>Authorized devices</h1>",
        f"/admin/devices/authorizeddevice/{device.pk}/change/": "<h1>Authorized device</h1>",
        "/admin/devices/playersession/": "<h1>Sessions</h1>",
        f"/admin/devices/playersession/{session.pk}/change/": "<h1>Session</h1>",
        "/admin/devices/deviceauditentry/": "<h1>Device and session audit</h1>",
    }
    for url, title in pages.items():
        page = client.get(url)
        assert page.status_code == 200, url
        assert title in page.text, url
        assert "to change" not in page.text and "to view" not in page.text and "View student" not in page.text, url

    student_page = client.get(f"{STUDENTS}{student.player_id}/change/").text
    assert f'href="{overview_of(student)}"' in student_page
    index = client.get("/admin/").text
    assert 'href="/api/docs/"' in index and "Memora support desk" in index
