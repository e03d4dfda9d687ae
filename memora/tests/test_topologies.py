"""The hot paths on every topology an operator runs (DESIGN v3, "Beyond one machine"): the shared
single Redis, a Sentinel set (master, replica, three sentinels) and a 3-master Redis Cluster.

The check, the award (student and service), the login limiter, the flush, NOSCRIPT and /status
against each; a rollback (every node restarted from an older AOF) on the Cluster. The Sentinel
failover under traffic is in test_failover.py.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from core import hotstate
from core.redisconn import SentinelIdentityConnection
from devices import servicekeys
from memora.tests.redisproc import ClusterProcesses
from memora.tests.test_rollback import acknowledged_before_and_after, assert_the_truth
from memora.tests.topologies import Pointer
from wallets import cache as wallet_cache
from wallets import flush
from wallets.models import LedgerEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.scale]

SESSION = "/api/v1/session/"
WALLET = "/api/v1/wallet/"


def lesson(student: Any, lesson_id: str, key: str) -> Any:
    return student.post(f"/api/v1/lessons/{lesson_id}/complete/", {"score": 100}, HTTP_IDEMPOTENCY_KEY=key)


def keys_per_node(prefix: str) -> dict[str, int]:
    client = hotstate.connection()
    return {
        name: sum(1 for _ in node.scan_iter(match=f"{prefix}:*", count=1000))
        for name, node in hotstate.primaries(client)
    }


def test_check_award_and_flush(topology, student_factory, api, settings):
    client = hotstate.connection()
    if topology == "sentinel":
        assert client.connection_pool.connection_class is SentinelIdentityConnection
    assert hotstate.is_cluster(client) == (topology == "cluster")
    students = [student_factory() for _ in range(12)]
    for student in students:
        assert student.get(SESSION).status_code == 200
    for i, student in enumerate(students):
        first = lesson(student, f"l{i}", f"k{i}")
        assert first.status_code == 201, first.content
        assert first.json()["wallet"]["xp_total"] == 15
        replay = lesson(student, f"l{i}", f"k{i}")
        assert replay["Idempotent-Replayed"] == "true"
        assert student.get(WALLET).json()["xp_total"] == 15
    _key, raw = servicekeys.service_key_create(name="fair", scopes=["award_xp"], actor=None)
    award = api.post(
        "/api/v1/wallet/xp/",
        {"player": students[0].player_id, "amount": 50, "reason": "Science fair"},
        format="json",
        HTTP_AUTHORIZATION=f"Api-Key {raw}",
        HTTP_IDEMPOTENCY_KEY="fair-1",
    )
    assert award.status_code == 201, award.content
    assert students[0].get(WALLET).json()["xp_total"] == 65
    if topology == "cluster":
        # The students' shards are spread over every master.
        per_node = keys_per_node(settings.MEMORA_REDIS_KEY_PREFIX)
        assert len(per_node) == 3 and all(per_node.values()), per_node

    summary = flush.wallet_flush(trigger="manual")
    assert (summary.events, summary.redis_unavailable) == (13, False)
    assert flush.wallet_flush(trigger="manual").events == 0
    rows = Counter(LedgerEvent.objects.values_list("player_id", "lesson_id"))
    assert len(rows) == 13 and set(rows.values()) == {1}
    assert wallet_cache.pending_stats(range(settings.MEMORA_REDIS_SHARDS)) == (0, None)
    call_command("verify_wallets")

    assert students[1].post("/api/v1/auth/logout/").status_code == 204
    ended = students[1].get(SESSION)
    assert (ended.status_code, ended.json()["code"]) == (401, "session_ended")
    assert students[2].get(SESSION).status_code == 200


def test_login_lockout(topology, student_factory, settings):
    """The limiter's scripts each touch one slot (the username's tag)."""
    settings.MEMORA_RATE_LOGIN_FAILURES_USER_IP = (3, 900)
    student = student_factory(login=False)
    for _ in range(3):
        assert student.login(password="wrong password!").status_code == 401
    locked = student.login()
    assert (locked.status_code, locked.json()["code"]) == (429, "rate_limited")
    call_command("rebuild_cache", "--no-progress", "--player", str(student.player_id))


def test_noscript_is_retried_once(topology, student):
    def flush_scripts() -> None:
        for _name, node in hotstate.primaries(hotstate.connection()):
            node.script_flush()

    assert lesson(student, "before", "k-before").status_code == 201
    flush_scripts()
    assert lesson(student, "after", "k-after").status_code == 201
    assert student.get(SESSION).status_code == 200
    flush_scripts()
    # The claims and releases run in a pipeline (a ClusterPipeline cannot load scripts itself).
    assert flush.wallet_flush(trigger="manual").events == 2


def test_status_per_node(topology, student, api, settings):
    settings.MEMORA_METRICS_TOKEN = "t0ken"
    assert lesson(student, "l1", "k1").status_code == 201
    status = api.get("/status", HTTP_AUTHORIZATION="Bearer t0ken").json()
    redis_check = status["checks"]["redis"]
    assert redis_check["reachable"] is True
    assert redis_check["maxmemory_policy"] == "noeviction"
    assert status["checks"]["pending_events"]["count"] == 1
    if topology == "cluster":
        assert len(redis_check["nodes"]) == 3
        assert all(node["maxmemory_policy"] == "noeviction" for node in redis_check["nodes"].values())


def test_cluster_restarted_from_older_aof_files(pointer: Pointer, student_factory, tmp_path: Path):
    """Every master comes back from a copy of its AOF taken earlier: each node's identity changed,
    so every stamped copy is suspect and rebuilt; nothing is counted twice, no ended session or
    revoked device answers 200."""
    servers = ClusterProcesses(tmp_path / "cluster")
    copies = tmp_path / "copies"
    try:
        servers.start()
        pointer.cluster(servers)

        def snapshot() -> None:
            for node in servers.nodes:
                shutil.copytree(node.directory, copies / node.directory.name, ignore=shutil.ignore_patterns("*.log"))

        state = acknowledged_before_and_after(student_factory, snapshot)
        servers.kill()
        for node in servers.nodes:
            shutil.rmtree(node.directory)
            shutil.copytree(copies / node.directory.name, node.directory)
        servers.restart()
        assert_the_truth(state, student_factory)
    finally:
        pointer.drop_keys()
        servers.stop()
