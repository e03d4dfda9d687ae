"""A Sentinel failover under traffic (DESIGN v3, "Beyond one machine").

Students log in, complete lessons and read their wallets over HTTP while the master is killed
(SIGKILL, by PID); the sentinels promote the replica and the app follows. No answer is a 500; a
write during the failover takes the database path or answers 503 (its retry with the same key
settles it); afterwards nothing is counted twice, no ended session answers 200, and the flush
runs on the new master.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db.models import Sum

from conftest import Student
from core import hotstate
from memora.tests.redisproc import SentinelSet
from memora.tests.topologies import Pointer
from wallets import cache as wallet_cache
from wallets import flush
from wallets.models import LedgerEvent, PlayerWallet

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.scale]

SESSION = "/api/v1/session/"
WALLET = "/api/v1/wallet/"


class Traffic:
    """Each round: every student checks their session, completes a lesson and reads the wallet;
    one student moves to a new device (a login that ends the old session)."""

    def __init__(self, students: list[Student]) -> None:
        self.students = students
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.unsettled: list[tuple[Student, str]] = []  # (student, lesson) answered 503
        self.ended: list[Student] = []  # sessions ended by a login elsewhere
        self.round = 0
        self.other_device: dict[int, str] = {}

    def record(self, label: str, response: Any, *allowed: int) -> Any:
        self.statuses[(label, response.status_code)] += 1
        assert response.status_code in allowed, (label, response.status_code, response.content[:300])
        return response

    def lesson(self, student: Student, lesson_id: str) -> Any:
        return student.post(
            f"/api/v1/lessons/{lesson_id}/complete/", {"score": 100}, HTTP_IDEMPOTENCY_KEY=f"k-{lesson_id}"
        )

    def run_round(self) -> None:
        self.round += 1
        for i, student in enumerate(self.students):
            self.record("session", student.get(SESSION), 200)
            lesson_id = f"s{i}-r{self.round}"
            done = self.record("lesson", self.lesson(student, lesson_id), 201, 503)
            if done.status_code == 503:
                self.unsettled.append((student, lesson_id))
            self.record("wallet", student.get(WALLET), 200)
        # Between two devices (the limit is two): each login ends the session on the other.
        index = self.round % len(self.students)
        mover = self.students[index]
        moved = mover.on_device(self.other_device.get(index))
        self.other_device[index] = mover.device_id
        self.record("login", moved.login(), 200)
        self.ended.append(mover)
        self.students[index] = moved
        for old in self.ended[-3:]:
            refused = self.record("ended", old.get(SESSION), 401)
            assert refused.json()["code"] in ("session_replaced", "session_ended"), refused.json()


def ledger_total(player_id: int) -> int:
    return int(LedgerEvent.objects.filter(player_id=player_id).aggregate(s=Sum("amount"))["s"] or 0)


def test_master_killed_under_traffic(pointer: Pointer, student_factory, tmp_path: Path, running_reconciler):
    servers = SentinelSet(tmp_path / "sentinel")
    placeholder = socket.socket()
    try:
        servers.start()
        # Short timeouts as in production: a dead master costs little per request.
        pointer.sentinel(servers, timeout=0.5)
        traffic = Traffic([student_factory() for _ in range(4)])
        for _ in range(3):
            traffic.run_round()
        assert flush.wallet_flush(trigger="manual").events == 12
        traffic.run_round()  # pending in Redis when the master dies

        old_port = servers.master_port()
        assert old_port == servers.master.port
        servers.master.kill()  # SIGKILL by PID
        # The sentinels will turn whatever answers at the old master's address into a replica of
        # the new one: keep that port from another test's server until they are stopped.
        # (Listening: with SO_REUSEADDR, past the killed server's TIME_WAIT connections, and no
        # other server can bind it while a socket listens there.)
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        placeholder.bind(("127.0.0.1", old_port))
        placeholder.listen(1)
        killed_at = time.monotonic()
        new_port = None
        while new_port is None:
            assert time.monotonic() - killed_at < 180, "no failover"
            traffic.run_round()
            new_port = servers.promoted(old_port)
        assert new_port == servers.replica.port
        # The app follows the new master: a write goes through Redis again within a few rounds.
        deadline = time.monotonic() + 60
        while True:
            traffic.run_round()
            pending, _oldest = flush_pending()
            if pending:
                break
            assert time.monotonic() < deadline, "the app never wrote to the new master"

        # Every write answered 503 during the failover settles on its retry, once.
        for student, lesson_id in traffic.unsettled:
            settled = traffic.lesson(student, lesson_id)
            assert settled.status_code == 201, settled.content
        # The flush runs on the new master, and the second run finds nothing.
        summary = flush.wallet_flush(trigger="manual")
        assert not summary.redis_unavailable and summary.events > 0
        assert flush.wallet_flush(trigger="manual").events == 0
        assert flush_pending() == (0, None)

        # Nothing counted twice: one ledger row per lesson (each lesson has its own key).
        rows = Counter(LedgerEvent.objects.filter(kind="lesson").values_list("player_id", "lesson_id"))
        assert set(rows.values()) == {1}
        for wallet in PlayerWallet.objects.all():
            assert wallet.xp_total == ledger_total(wallet.player_id)
        call_command("verify_wallets")
        for student in traffic.students:
            shown = traffic.record("wallet", student.get(WALLET), 200).json()["xp_total"]
            assert shown == ledger_total(student.player_id or 0)
        for old in traffic.ended:
            refused = old.get(SESSION)
            assert refused.status_code == 401, refused.content
        assert not [key for key in traffic.statuses if key[1] >= 500 and key != ("lesson", 503)], traffic.statuses
    finally:
        pointer.drop_keys()
        servers.stop()
        placeholder.close()


def flush_pending() -> tuple[int, float | None]:
    try:
        return wallet_cache.pending_stats(range(settings.MEMORA_REDIS_SHARDS))
    except hotstate.RedisUnavailable:
        return 0, None
