"""Redis goes back in time after acknowledging writes: a restart from an older copy of its AOF,
and a failover to a replica that lagged. Nothing the outbox could cover (Redis was up the whole
time): the server identity stamped on every copy is what finds the stale ones.

After each: ended sessions and revoked devices refused, the database wallet equal to its ledger,
the Redis wallet rebuilt from the truth, pending events flushed once, no 500.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import Sum

from devices import cache as device_cache
from devices import services as device_services
from devices.models import AuthorizedDevice
from memora.tests.redisproc import RedisProcess
from wallets import flush
from wallets.models import LedgerEvent, PlayerWallet

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def lesson(student: Any, lesson_id: str) -> Any:
    response = student.post(
        f"/api/v1/lessons/{lesson_id}/complete/", {"score": 100}, HTTP_IDEMPOTENCY_KEY=f"k-{lesson_id}"
    )
    assert response.status_code == 201, response.content
    return response


def ledger_total(player_id: int) -> int:
    return int(LedgerEvent.objects.filter(player_id=player_id).aggregate(s=Sum("amount"))["s"] or 0)


def acknowledged_before_and_after(student_factory: Any, snapshot: Any) -> dict[str, Any]:
    """The scenario: some awards flushed, one accepted; the copy point; the accepted one flushed,
    another accepted (lost with the rollback: the durability window), a logout, a revocation."""
    ann = student_factory()
    ben = student_factory()
    lesson(ann, "a1")
    lesson(ann, "a2")
    lesson(ben, "b1")
    assert flush.wallet_flush(trigger="manual").events == 3
    lesson(ann, "a3")  # accepted before the copy, flushed after it
    assert ann.get("/api/v1/session/").status_code == 200
    assert ben.get("/api/v1/session/").status_code == 200
    snapshot()
    assert flush.wallet_flush(trigger="manual").events == 1
    lesson(ann, "a4")  # acknowledged after the copy, never flushed: the durability window
    assert ann.post("/api/v1/auth/logout/").status_code == 204
    device = AuthorizedDevice.objects.get(player_id=ben.player_id, device_id=ben.device_id)
    assert device_services.device_revoke(device_pk=device.pk, actor=None, reason="lost phone")
    assert ann.get("/api/v1/session/").status_code == 401
    assert ben.get("/api/v1/session/").status_code == 401
    return {"ann": ann, "ben": ben}


def assert_the_truth(state: dict[str, Any], student_factory: Any) -> None:
    ann, ben = state["ann"], state["ben"]
    for _ in range(3):
        ended = ann.get("/api/v1/session/")
        assert (ended.status_code, ended.json()["code"]) == (401, "session_ended")
        revoked = ben.get("/api/v1/session/")
        assert (revoked.status_code, revoked.json()["code"]) == (401, "device_revoked")
    # Ann logs in again; her wallet is the database's truth (a1..a3), rebuilt from it.
    assert ann.login().status_code == 200
    wallet = ann.get("/api/v1/wallet/")
    assert wallet.status_code == 200
    assert wallet.json()["xp_total"] == ledger_total(ann.player_id) == 45
    # a3 came back as pending (it was flushed after the copy): the flush drops it, once.
    summary = flush.wallet_flush(trigger="manual")
    assert summary.events == 0 and summary.already_written >= 1
    assert sorted(LedgerEvent.objects.filter(player_id=ann.player_id).values_list("lesson_id", flat=True)) == [
        "a1",
        "a2",
        "a3",
    ]
    # New awards count from the truth.
    assert lesson(ann, "a5").json()["wallet"]["xp_total"] == 60
    flush.wallet_flush(trigger="manual")
    for wallet_row in PlayerWallet.objects.filter(player_id__in=[ann.player_id, ben.player_id]):
        assert wallet_row.xp_total == ledger_total(wallet_row.player_id)
    call_command("verify_wallets")


def test_restart_from_an_older_aof(student_factory, tmp_path, point_redis):
    server = RedisProcess(tmp_path / "redis", aof=True, fsync="always")
    server.start()
    point_redis(server.url)
    copy = tmp_path / "copy"
    try:
        state = acknowledged_before_and_after(
            student_factory, lambda: shutil.copytree(server.directory, copy, ignore=shutil.ignore_patterns("*.log"))
        )
        server.kill()
        shutil.rmtree(server.directory)
        shutil.copytree(copy, server.directory)
        server.start()  # same address: the app's connections reconnect to an older Redis
        assert_the_truth(state, student_factory)
    finally:
        server.stop()


def test_failover_to_a_replica_that_lagged(student_factory, tmp_path, point_redis):
    master = RedisProcess(tmp_path / "master", aof=True, fsync="always")
    replica = RedisProcess(tmp_path / "replica", aof=True, fsync="always")
    master.start()
    replica.start()
    point_redis(master.url)
    try:
        replica.client().replicaof("127.0.0.1", master.port)

        def replica_stops_receiving() -> None:
            # Caught up to here, then cut off (the lag a failover loses).
            deadline = time.monotonic() + 60
            while True:
                offsets = master.client().info("replication")
                slave = offsets.get("slave0") or {}
                if slave and slave.get("state") == "online" and slave.get("offset") == offsets["master_repl_offset"]:
                    break
                assert time.monotonic() < deadline, offsets
                time.sleep(0.05)
            replica.client().replicaof("no", "one")  # promoted: a new replication id

        state = acknowledged_before_and_after(student_factory, replica_stops_receiving)
        master.kill()
        point_redis(replica.url)  # the application follows the promoted server
        assert_the_truth(state, student_factory)
    finally:
        master.stop()
        replica.stop()


def test_recovery_drops_every_outbox_copy_before_any_rebuild(student_factory, tmp_path, point_redis):
    """A partition (the same Redis, unreachable): no identity changes, so the outbox must cover
    it. Every copy it names is dropped first, whatever the backlog, then rebuilt at leisure."""
    from memora import reconciler
    from memora.tests.redisproc import free_port

    server = RedisProcess(tmp_path / "redis", aof=True, fsync="always")
    server.start()
    point_redis(server.url)
    try:
        students = [student_factory() for _ in range(3)]
        for s in students:
            assert s.get("/api/v1/session/").status_code == 200
        point_redis(f"redis://127.0.0.1:{free_port()}/0")  # the partition
        for s in students:
            device_services.session_end_all(player_id=s.player_id, reason="ended_by_support")
        point_redis(server.url)
        # Another process knows nothing of the failed writes: to it the copies still say "live".
        device_cache.stale_players.clear()
        assert students[0].get("/api/v1/session/").status_code == 200
        # Dropping them is enough, before any rebuild:
        assert reconciler.invalidate_outbox_copies(batch=2) == 3
        for s in students:
            refused = s.get("/api/v1/session/")
            assert (refused.status_code, refused.json()["code"]) == (401, "session_ended")
    finally:
        server.stop()


def test_a_revoked_service_key_stays_revoked_after_a_rollback(student_factory, api, tmp_path, point_redis):
    from devices import servicekeys

    server = RedisProcess(tmp_path / "redis", aof=True, fsync="always")
    server.start()
    point_redis(server.url)
    copy = tmp_path / "copy"
    try:
        student = student_factory()
        key, raw = servicekeys.service_key_create(name="grader", scopes=["award_xp"], actor=None)

        def grant(n: int) -> Any:
            return api.post(
                "/api/v1/wallet/xp/",
                {"player": student.player_id, "amount": 5, "reason": "quiz"},
                format="json",
                HTTP_AUTHORIZATION=f"Api-Key {raw}",
                HTTP_IDEMPOTENCY_KEY=f"grant-{n}",
            )

        assert grant(1).status_code == 201  # the key is cached now
        shutil.copytree(server.directory, copy, ignore=shutil.ignore_patterns("*.log"))
        servicekeys.service_key_revoke(key_pk=key.pk)
        assert grant(2).status_code == 401
        server.kill()
        shutil.rmtree(server.directory)
        shutil.copytree(copy, server.directory)
        server.start()  # the cached key is back, its tombstone gone
        for n in range(3, 6):
            assert grant(n).status_code == 401
    finally:
        server.stop()
