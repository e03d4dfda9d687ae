"""Support reinstates a streak in the admin and answers "why did my streak reset?" from the
student overview page."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import time_machine
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import call_command

from devices.tests.test_admin import staff_client
from wallets.models import EventKind, LedgerEvent

pytestmark = pytest.mark.django_db(transaction=True)

STUDENTS = "/admin/players/playerprofile/"
DAY0 = dt.datetime(2026, 11, 2, 15, 0, tzinfo=dt.UTC)


def practise(student, day: int) -> None:
    with time_machine.travel(DAY0 + dt.timedelta(days=day), tick=False):
        response = student.post("/api/v1/lessons/daily/complete/", {}, HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
        assert response.status_code == 201


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
    assert refused.status_code in (200, 302, 403)
