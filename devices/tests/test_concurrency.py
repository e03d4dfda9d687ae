"""Writers of one student's sessions and devices racing each other: no deadlock, no session that
outlives the change it raced with, one device row per device id."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model

from core import hotstate
from core.errors import ApiError
from devices import cache, services
from devices.models import AuthorizedDevice, PlayerSession
from devices.tests.helpers import run_in_threads
from players.models import PlayerProfile

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 25


def test_logout_racing_a_login_never_deadlocks(student):
    """Logout used to lock the session row before the profile row, a login the other way round."""
    profile = PlayerProfile.objects.get(pk=student.player_id)
    failures = []
    for _ in range(ROUNDS):
        live = PlayerSession.objects.get(player_id=student.player_id, is_live=True).pk

        def work(index: int, live: int = live) -> str:
            if index == 0:
                services.session_end(session_id=live, reason="logout")
            else:
                services.session_login(profile=profile, device_id=student.device_id, device_name=None, platform=None)
            return "ok"

        failures += [r for r in run_in_threads(2, work) if r != "ok"]
    assert failures == []
    assert PlayerSession.objects.filter(player_id=student.player_id, is_live=True).count() <= 1


def test_the_last_seen_flush_racing_a_login_never_deadlocks(student):
    """The flush used to lock sessions before devices, a login the other way round."""
    profile = PlayerProfile.objects.get(pk=student.player_id)
    redis = hotstate.connection()
    failures = []
    for i in range(ROUNDS):
        redis.hset(cache.auth_key(student.player_id), "seen", repr(time.time() + 60 + i))
        redis.sadd(cache.seen_key(hotstate.shard_of(student.player_id)), student.player_id)

        def work(index: int) -> str:
            if index == 0:
                services.last_seen_persist()
            else:
                services.session_login(profile=profile, device_id=student.device_id, device_name=None, platform=None)
            return "ok"

        failures += [r for r in run_in_threads(2, work) if r != "ok"]
    assert failures == []


def test_parallel_logins_from_one_new_device_make_one_device(student_factory):
    student = student_factory(login=False)
    profile = PlayerProfile.objects.get(pk=student.player_id)
    device_id = student.device_id

    def work(_index: int) -> str:
        services.session_login(profile=profile, device_id=device_id, device_name="phone", platform=None)
        return "ok"

    assert run_in_threads(10, work) == ["ok"] * 10
    assert AuthorizedDevice.objects.filter(player_id=student.player_id).count() == 1
    assert PlayerSession.objects.filter(player_id=student.player_id, is_live=True).count() == 1
    assert PlayerSession.objects.filter(player_id=student.player_id, end_reason="replaced").count() == 9


@pytest.mark.parametrize("change", ["password", "deactivate"])
def test_a_login_that_checked_the_password_before_a_change_does_not_start(student, change):
    """The password check runs before the profile lock; a change committed in between wins."""
    profile = services.login_verify_credentials(username=student.username, password=student.password)
    assert profile is not None
    user = get_user_model().objects.get(pk=profile.user_id)
    if change == "password":
        user.set_password("a brand new passphrase")
    else:
        user.is_active = False
    user.save()
    before = list(PlayerSession.objects.filter(player_id=student.player_id).values_list("pk", "is_live"))
    with pytest.raises(ApiError) as caught:
        services.session_login(profile=profile, device_id=student.device_id, device_name=None, platform=None)
    assert (caught.value.code, caught.value.status) == ("invalid_credentials", 401)
    assert list(PlayerSession.objects.filter(player_id=student.player_id).values_list("pk", "is_live")) == before
    assert not PlayerSession.objects.filter(player_id=student.player_id, is_live=True).exists()
