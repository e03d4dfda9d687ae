"""Beyond the plan: swapping a device at login after an app reinstall, and the device-limit
policy, both under the removal cooldown and under parallel logins."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from devices.models import AuditAction, AuthorizedDevice, DeviceAuditEntry, PlayerSession
from devices.tests.helpers import login_from_new_device, run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def active(player_id: int) -> set[str]:
    return {
        str(d)
        for d in AuthorizedDevice.objects.filter(player_id=player_id, revoked_at__isnull=True).values_list(
            "device_id", flat=True
        )
    }


def test_reinstall_swap_at_the_limit_then_a_second_swap_inside_the_cooldown(student):
    tablet = student.on_device()
    assert tablet.login(device_name="Tablet").status_code == 200
    reinstalled = student.on_device()  # the same phone after a reinstall: a new device id
    refused = reinstalled.login()
    assert refused.json()["code"] == "device_limit_reached"
    listed = [d["device_id"] for d in refused.json()["devices"]]
    swapped = reinstalled.login(replace_device_id=student.device_id)
    assert swapped.status_code == 200, swapped.json()
    assert student.device_id in listed
    assert active(student.player_id) == {tablet.device_id, reinstalled.device_id}
    old = AuthorizedDevice.objects.get(player_id=student.player_id, device_id=student.device_id)
    assert old.revoke_reason == "replaced at login"
    assert old.login_blocked is False  # a swap frees the slot; it does not ban the old id
    assert DeviceAuditEntry.objects.filter(device=old, action=AuditAction.REPLACED).exists()
    assert reinstalled.get("/api/v1/session/").status_code == 200
    # A second swap inside the cooldown: refused with the date, and nothing changes.
    another = student.on_device()
    again = another.login(replace_device_id=tablet.device_id)
    assert again.status_code == 403
    assert again.json()["code"] == "device_removal_cooldown"
    assert again.json()["next_allowed_at"]
    assert active(student.player_id) == {tablet.device_id, reinstalled.device_id}
    assert reinstalled.get("/api/v1/session/").status_code == 200
    # After the cooldown the swap works again.
    with time_machine.travel(timezone.now() + dt.timedelta(days=31)):
        assert another.login(replace_device_id=tablet.device_id).status_code == 200
    assert active(student.player_id) == {reinstalled.device_id, another.device_id}


def test_replace_device_id_must_be_one_of_the_accounts_devices(student):
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    stranger = student.on_device()
    response = stranger.login(replace_device_id="0b6c1c3e-4f7a-4d7e-9a59-3f1f0c2a9d10")
    assert response.status_code == 400
    assert "replace_device_id" in response.json()["errors"]
    assert tablet.get("/api/v1/session/").status_code == 200


def test_policy_replace_least_recent_revokes_the_oldest_device_audited(student, settings):
    settings.MEMORA_DEVICE_LIMIT_POLICY = "replace_least_recent"
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    newcomer = student.on_device()
    assert newcomer.login().status_code == 200
    assert active(student.player_id) == {tablet.device_id, newcomer.device_id}
    old = AuthorizedDevice.objects.get(player_id=student.player_id, device_id=student.device_id)
    assert old.revoke_reason == "least recently used device replaced at login"
    # The same cooldown holds: no ping-pong between two phones.
    third = student.on_device()
    refused = third.login()
    assert (refused.status_code, refused.json()["code"]) == (403, "device_removal_cooldown")


@pytest.mark.parametrize("policy", ["refuse", "replace_least_recent"])
def test_both_policies_hold_the_limit_under_twenty_parallel_logins(student_factory, settings, policy):
    settings.MEMORA_DEVICE_LIMIT_POLICY = policy
    student = student_factory(login=False)
    results = run_in_threads(20, lambda _i: login_from_new_device(student.username, student.password))
    assert len(active(student.player_id)) == 2
    assert PlayerSession.objects.filter(player_id=student.player_id, is_live=True).count() == 1
    if policy == "refuse":
        assert sorted(results) == [200] * 2 + [403] * 18
    else:
        # Two free slots, then one replacement; the cooldown refuses every later one.
        assert sorted(results) == [200] * 3 + [403] * 17
        assert AuthorizedDevice.objects.filter(player_id=student.player_id, revoked_at__isnull=False).count() == 1
