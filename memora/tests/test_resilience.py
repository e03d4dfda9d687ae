"""Redis and the database fail; nothing is lost and no ended session comes back.

Each test runs its own redis-server (killed with SIGKILL, restarted empty, from a stale AOF
copy, or left running behind a "partition") and never touches the shared Redis or MariaDB.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from conftest import Student
from core import hotstate
from core.errors import ApiError
from devices import cache as device_cache
from devices import tokens
from memora.tests.redisproc import RedisProcess, free_port
from memora.tests.support import poll
from wallets import idempotency
from wallets import services as wallet_services
from wallets.models import LedgerEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def private_redis(tmp_path: Any, point_redis: Any) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path / "redis", aof=True, fsync="always")
    server.start()
    point_redis(server.url)
    yield server
    server.stop()


def lesson(student: Student, lesson_id: str, key: str) -> Any:
    return student.post(f"/api/v1/lessons/{lesson_id}/complete/", {"score": 100}, HTTP_IDEMPOTENCY_KEY=key)


def live_digest(player_id: int) -> bytes | None:
    return hotstate.connection().hget(device_cache.auth_key(player_id), "cur")


def outage_scenario(student_factory: Any, api: Any, server: RedisProcess) -> dict[str, Any]:
    """Students keep using the app while Redis is dead (SIGKILL)."""
    phone = student_factory()
    assert phone.get("/api/v1/session/").status_code == 200  # warm
    assert lesson(phone, "before-outage", "k-before").status_code == 201  # pending in Redis
    server.kill()

    assert phone.get("/api/v1/session/").status_code == 200  # the database answers
    during = lesson(phone, "during-outage", "k-during")
    assert during.status_code == 201, during.json()
    assert api.get("/readyz").status_code == 200
    tablet = phone.on_device()
    assert tablet.login().status_code == 200  # login works from the database
    replaced = phone.get("/api/v1/session/")
    assert (replaced.status_code, replaced.json()["code"]) == (401, "session_replaced")
    return {"phone": phone, "tablet": tablet, "during": during.json()}


def test_redis_back_from_a_stale_aof(student_factory, api, private_redis, point_redis, tmp_path, running_reconciler):
    stale_dir = tmp_path / "stale"
    phone_warm = student_factory()
    assert phone_warm.get("/api/v1/session/").status_code == 200
    # The stale copy is taken later, inside the scenario, right before the kill.
    original_kill = private_redis.kill

    def snapshot_then_kill() -> None:
        if not stale_dir.exists():
            shutil.copytree(private_redis.directory, stale_dir)
        original_kill()

    private_redis.kill = snapshot_then_kill  # type: ignore[method-assign]
    state = outage_scenario(student_factory, api, private_redis)
    phone, tablet = state["phone"], state["tablet"]

    # Redis returns from the old AOF (here at a new address, as after a failover): it still holds
    # the phone's session as the live one.
    stale = RedisProcess(stale_dir, aof=True, fsync="always")
    stale.start()
    try:
        stale_cur = stale.client().hget(device_cache.auth_key(phone.player_id), "cur")
        assert stale_cur == tokens.digest(phone.token).encode()
        point_redis(stale.url)
        poll(lambda: live_digest(phone.player_id) == tokens.digest(tablet.token).encode(), 60)
        for _ in range(5):
            refused = phone.get("/api/v1/session/")
            assert (refused.status_code, refused.json()["code"]) == (401, "session_replaced")
        assert tablet.get("/api/v1/session/").status_code == 200

        # The wallet equals every award; the key first used during the outage counts nothing now.
        poll(lambda: tablet.get("/api/v1/wallet/").json()["xp_total"] == 30, 60)
        replay = lesson(tablet, "during-outage", "k-during")
        assert replay["Idempotent-Replayed"] == "true"
        assert replay.json()["event_id"] == state["during"]["event_id"]
        assert tablet.get("/api/v1/wallet/").json()["xp_total"] == 30

        # The flush writes the pre-outage event once; the outage event was already in the ledger.
        call_command("sync_wallets", "--no-progress")
        call_command("sync_wallets", "--no-progress")
        events = LedgerEvent.objects.filter(player_id=phone.player_id)
        assert sorted(e.lesson_id for e in events) == ["before-outage", "during-outage"]
        call_command("verify_wallets")
    finally:
        stale.stop()


def test_redis_back_empty(student_factory, api, private_redis, running_reconciler):
    state = outage_scenario(student_factory, api, private_redis)
    phone, tablet = state["phone"], state["tablet"]
    shutil.rmtree(private_redis.directory)  # Redis comes back with nothing
    private_redis.directory.mkdir()
    private_redis.start()
    assert private_redis.client().dbsize() == 0
    assert tablet.get("/api/v1/session/").status_code == 200  # the live session survives
    # Rebuilt from the database (on demand or by the reconciler), without the ended session.
    poll(lambda: live_digest(tablet.player_id) == tokens.digest(tablet.token).encode(), 60)
    refused = phone.get("/api/v1/session/")
    assert (refused.status_code, refused.json()["code"]) == (401, "session_replaced")
    wallet = tablet.get("/api/v1/wallet/").json()
    # The pre-outage event lived only in the lost Redis (no flush ran): the outage award remains.
    assert wallet["xp_total"] == 15


def test_partition_redis_never_lost_its_data(student_factory, private_redis, point_redis, running_reconciler):
    phone = student_factory()
    assert phone.get("/api/v1/session/").status_code == 200
    point_redis(f"redis://127.0.0.1:{free_port()}/0")  # the app cannot reach Redis; Redis keeps it all
    assert phone.post("/api/v1/auth/logout/").status_code == 204
    ended = phone.get("/api/v1/session/")
    assert (ended.status_code, ended.json()["reason"]) == (401, "logout")
    point_redis(private_redis.url)
    poll(lambda: live_digest(phone.player_id) is None, 60)
    for _ in range(3):
        again = phone.get("/api/v1/session/")
        assert (again.status_code, again.json()["reason"]) == (401, "logout")


def test_award_timeout_after_sending_is_503_and_the_retry_settles(student, private_redis, point_redis):
    assert lesson(student, "warm", "k0").status_code == 201
    pid = student.player_id
    # The award the lesson view builds for {"score": 100} with the key "k-timeout".
    request = wallet_services.AwardRequest(
        player_id=pid,
        kind="lesson",
        base_amount=15,
        local_day=timezone.now().date(),
        idem_scope=idempotency.scope(caller=f"p:{pid}", endpoint="lesson_complete", player_id=pid),
        idem_key="k-timeout",
        fingerprint=idempotency.fingerprint(
            method="POST", route="lesson_complete", path_params={"lesson_id": "algebra"}, body={"score": 100}
        ),
        lesson_id="algebra",
    )
    # Redis holds every write until told otherwise, so the app's short timeout certainly expires
    # after the award was sent, however busy the machine. (The same server under another spelling
    # of its URL: the app keeps one client per URL, and this one has the short timeout.)
    point_redis(f"redis://127.0.0.1:{private_redis.port}?db=0", timeout=0.3)
    pauser = private_redis.client()
    pauser.execute_command("CLIENT", "PAUSE", "120000", "WRITE")
    try:
        with pytest.raises(ApiError) as caught:
            wallet_services.wallet_award(request=request)  # sent, then no answer within the timeout
    finally:
        pauser.execute_command("CLIENT", "UNPAUSE")
    assert caught.value.code == "service_unavailable"
    assert caught.value.headers()["Retry-After"]
    # Whether Redis ran the award after the pause or dropped it with our closed connection, the
    # app's retry with the same key settles it: counted exactly once.
    point_redis(private_redis.url)
    retried = lesson(student, "algebra", "k-timeout")
    assert retried.status_code == 201
    assert student.get("/api/v1/wallet/").json()["xp_total"] == 30
    again = lesson(student, "algebra", "k-timeout")
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == retried.json()
    assert student.get("/api/v1/wallet/").json()["xp_total"] == 30


def test_aof_durability_every_award_acknowledged_2s_before_a_kill_survives(student_factory, tmp_path, point_redis):
    server = RedisProcess(tmp_path / "aof", aof=True, fsync="everysec")
    server.start()
    point_redis(server.url)
    try:
        students = [student_factory() for _ in range(3)]
        acknowledged = []
        for s in students:
            for i in range(5):
                response = lesson(s, f"l{i}", f"{s.username}-{i}")
                assert response.status_code == 201
                acknowledged.append(response.json()["event_id"])
        time.sleep(2.2)  # the durability contract: acknowledged more than 2 s before the kill
        server.kill()
        server.start()  # from its own AOF
        hotstate.breaker.reset()
        call_command("sync_wallets", "--no-progress")
        call_command("sync_wallets", "--no-progress")
        ledger = sorted(str(e) for e in LedgerEvent.objects.values_list("event_id", flat=True))
        assert ledger == sorted(acknowledged)
        call_command("verify_wallets")
    finally:
        server.stop()


def test_database_down_with_a_warm_cache(student, api, settings):
    assert lesson(student, "warm", "k-warm").status_code == 201
    assert student.get("/api/v1/wallet/").status_code == 200
    conn = connections["default"]
    saved = dict(conn.settings_dict)
    conn.close()
    conn.settings_dict["HOST"] = "127.0.0.1"
    conn.settings_dict["PORT"] = free_port()  # nothing listens there
    try:
        assert student.get("/api/v1/session/").status_code == 200
        award = lesson(student, "offline-db", str(uuid.uuid4()))
        assert award.status_code == 201
        assert award.json()["wallet"]["xp_total"] == 30
        assert student.get("/api/v1/wallet/").json()["xp_total"] == 30
        other = student.on_device()
        refused = other.login()
        assert refused.status_code == 503
        assert refused.json()["code"] == "service_unavailable"
        assert refused["Retry-After"]
        assert api.get("/readyz").status_code == 200  # Redis still serves
    finally:
        conn.close()
        conn.settings_dict.update(saved)
    call_command("sync_wallets", "--no-progress")
    assert LedgerEvent.objects.filter(player_id=student.player_id).count() == 2
