"""A full Redis (maxmemory below use, noeviction) and a demoted one (REPLICAOF an unreachable
master: READONLY, or MASTERDOWN without stale reads) refuse writes while they answer: under
traffic no request answers 500, the device + session check passes, awards and logins take the
database path, the flush neither crashes nor loses anything, and all of it shows once Redis
accepts writes again.

Each test runs its own redis-server on a free loopback port (stopped by its PID) with generous
timeouts; the shared Redis on 6379 is never reconfigured.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.core.management import call_command
from redis.sentinel import SentinelManagedConnection

from conftest import Student
from core import hotstate
from devices import cache as device_cache
from devices import tokens
from memora.tests.redisproc import RedisProcess, free_port
from memora.tests.support import poll
from wallets import cache as wallet_cache
from wallets import flush as wallet_flush
from wallets.models import LedgerEvent, PlayerWallet

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SESSION = "/api/v1/session/"
WALLET = "/api/v1/wallet/"
DEVICES = "/api/v1/devices/"
GENEROUS = 10.0  # seconds: a busy 2-core machine must not turn a slow answer into a failure


@pytest.fixture
def server(tmp_path: Any, settings: Any) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path / "redis")
    proc.start()
    caches = dict(settings.CACHES)
    options = {**caches["default"]["OPTIONS"], "SOCKET_TIMEOUT": GENEROUS, "SOCKET_CONNECT_TIMEOUT": GENEROUS}
    caches["default"] = {**caches["default"], "LOCATION": proc.url, "OPTIONS": options}
    settings.CACHES = caches
    hotstate.breaker.reset()
    yield proc
    hotstate.breaker.reset()
    proc.stop()


@pytest.fixture
def admin(server: RedisProcess) -> Iterator[redis.Redis]:
    """The operator's own connection to the private server."""
    client = redis.Redis(port=server.port, socket_timeout=GENEROUS, socket_connect_timeout=GENEROUS)
    yield client
    client.close()


def fill(admin: redis.Redis) -> None:
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", max(1, used // 2))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        admin.set("probe", "x")


def unfill(admin: redis.Redis) -> None:
    admin.config_set("maxmemory", 0)
    admin.set("probe", "x")


def demote(admin: redis.Redis, *, serve_stale: bool) -> None:
    admin.config_set("replica-serve-stale-data", "yes" if serve_stale else "no")
    admin.replicaof("127.0.0.1", free_port())  # nothing listens there: the link stays down
    with pytest.raises(redis.exceptions.ReadOnlyError):
        admin.set("probe", "x")
    if not serve_stale:
        with pytest.raises(redis.exceptions.MasterDownError):
            admin.get("probe")


def promote(admin: redis.Redis) -> None:
    admin.replicaof("NO", "ONE")
    poll(lambda: admin.set("probe", "x") is True, 60)


class Traffic:
    """Every answer the app gives during the test; none may be a 500."""

    def __init__(self) -> None:
        self.statuses: list[tuple[str, int]] = []

    def __call__(self, label: str, response: Any, *expected: int) -> Any:
        self.statuses.append((label, response.status_code))
        assert response.status_code < 500, (label, response.status_code, response.content)
        if expected:
            assert response.status_code in expected, (label, response.status_code, response.content)
        return response


def lesson(student: Student, lesson_id: str, key: str) -> Any:
    # The key carries the username: the database path's key lock is a MariaDB named lock, which
    # is server-wide, and another xdist worker's test database has students with the same ids.
    key = f"{student.username}-{key}"
    return student.post(f"/api/v1/lessons/{lesson_id}/complete/", {"score": 100}, HTTP_IDEMPOTENCY_KEY=key)


def browse(traffic: Traffic, students: list[Student], rounds: int = 3) -> None:
    for _ in range(rounds):
        for s in students:
            traffic("session", s.get(SESSION), 200)
            traffic("wallet", s.get(WALLET), 200)
            traffic("devices", s.get(DEVICES), 200)


def ledger_lessons(player_id: int | None) -> list[str]:
    return sorted(str(e) for e in LedgerEvent.objects.filter(player_id=player_id).values_list("lesson_id", flat=True))


def degraded_then_back(
    student_factory: Any, api: Any, admin: redis.Redis, degrade: Callable[[], None], restore: Callable[[], None]
) -> dict[str, Any]:
    """The workload: students with pending Redis events browse, earn, log in and out while Redis
    refuses writes; then Redis accepts writes again and everything must show."""
    traffic = Traffic()
    anna, ben, cleo = student_factory(), student_factory(), student_factory()
    traffic("lesson", lesson(anna, "before", "anna-before"), 201)  # pending in Redis
    browse(traffic, [anna, ben, cleo], rounds=1)  # warm copies

    degrade()
    browse(traffic, [anna, ben, cleo])

    during = traffic("lesson", lesson(anna, "during", "anna-during"), 201).json()
    # Judged from the database alone: the event still pending in Redis is out of reach (DESIGN).
    assert during["xp_awarded"] == 15
    # Written at once, before any flush: the database path.
    assert LedgerEvent.objects.filter(event_id=during["event_id"]).exists()
    replay = traffic("replay", lesson(anna, "during", "anna-during"), 201)
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json()["event_id"] == during["event_id"]

    tablet = ben.on_device()
    traffic("login", tablet.login(), 200)
    replaced = traffic("replaced", ben.get(SESSION), 401)
    assert replaced.json()["code"] == "session_replaced"
    browse(traffic, [tablet, anna])  # the new session is known to the database only
    earned = traffic("lesson", lesson(tablet, "tablet", "ben-tablet"), 201).json()
    assert LedgerEvent.objects.filter(event_id=earned["event_id"]).exists()

    traffic("logout", cleo.post("/api/v1/auth/logout/"), 204)
    ended = traffic("ended", cleo.get(SESSION), 401)
    assert ended.json()["reason"] == "logout"
    traffic("readyz", api.get("/readyz"), 200)

    wallet_flush.wallet_flush()  # whatever Redis refuses, the flush does not crash
    browse(traffic, [anna, tablet])

    restore()
    # Once Redis takes writes again, what changed on the database path shows there too.
    poll(lambda: anna.get(WALLET).json()["xp_total"] == 30, 60)
    poll(lambda: device_cache_current(tablet) == tokens.digest(tablet.token or "").encode(), 60)
    poll(lambda: tablet.get(WALLET).json()["xp_total"] == 15, 60)
    for _ in range(3):
        browse(traffic, [anna, tablet], rounds=1)
        assert traffic("replaced", ben.get(SESSION), 401).json()["code"] == "session_replaced"
        assert traffic("ended", cleo.get(SESSION), 401).json()["reason"] == "logout"
    traffic("lesson", lesson(anna, "after", "anna-after"), 201)
    assert traffic("wallet", anna.get(WALLET), 200).json()["xp_total"] == 45

    wallet_flush.wallet_flush()
    wallet_flush.wallet_flush()
    assert ledger_lessons(anna.player_id) == ["after", "before", "during"]
    assert ledger_lessons(tablet.player_id) == ["tablet"]
    assert PlayerWallet.objects.get(player_id=anna.player_id).xp_total == 45
    assert PlayerWallet.objects.get(player_id=tablet.player_id).xp_total == 15
    call_command("verify_wallets")  # exits non-zero on any drift
    assert all(status < 500 for _label, status in traffic.statuses)
    return {"anna": anna, "tablet": tablet, "traffic": traffic}


def device_cache_current(student: Student) -> bytes | None:
    return hotstate.connection().hget(device_cache.auth_key(student.player_id or 0), "cur")


# --- the rejections are recognised by class -------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("full", redis.exceptions.OutOfMemoryError),
        ("read-only", redis.exceptions.ReadOnlyError),
        ("master-down", redis.exceptions.MasterDownError),
    ],
)
def test_a_refusing_redis_is_certainly_not_run(server, admin, state, expected):
    admin.set("k", "v")
    if state == "full":
        fill(admin)
    else:
        demote(admin, serve_stale=state == "read-only")
    write_in_script = hotstate.LuaScript("redis.call('GET', KEYS[1]) redis.call('SET', KEYS[1], ARGV[1]) return 1")
    commands: list[Callable[[redis.Redis], Any]] = [lambda r: write_in_script(r, ["k"], ["w"])]
    # Without stale reads a replica refuses reads too (a write is refused as READONLY first).
    commands.append((lambda r: r.get("k")) if state == "master-down" else (lambda r: r.set("k", "w")))
    for command in commands:
        hotstate.breaker.reset()
        with pytest.raises(hotstate.RedisUnavailable) as caught:
            hotstate.call(command)
        assert caught.value.certainly_not_run, caught.value
        assert isinstance(caught.value.__cause__, expected)
    assert state == "master-down" or admin.get("k") == b"v"


def test_the_prefix_is_still_recognised_when_a_client_keeps_it():
    for message in ("OOM command not allowed", "READONLY You can't write", "BUSY Redis is busy running a script"):
        assert hotstate.classify(redis.ResponseError(message)).certainly_not_run
    for message in ("ERR Error running script", "WRONGTYPE Operation against a key"):
        assert not hotstate.classify(redis.ResponseError(message)).certainly_not_run


def test_sentinel_readonly_from_a_demoted_master_is_certainly_not_run(server, admin):
    demote(admin, serve_stale=True)

    class SentinelSaysMasterIsThere:
        """What a Sentinel pool tells its connection: the master lives at this (now demoted) address."""

        is_master = True
        check_connection = False

        def get_master_address(self) -> tuple[str, int]:
            return ("127.0.0.1", server.port)

    connection = SentinelManagedConnection(
        connection_pool=SentinelSaysMasterIsThere(), host="127.0.0.1", port=server.port, socket_timeout=GENEROUS
    )
    try:
        connection.send_command("SET", "k", "v")
        with pytest.raises(redis.ConnectionError) as caught:
            connection.read_response()
    finally:
        connection.disconnect()
    assert str(caught.value) == "The previous master is now a slave"
    assert hotstate.classify(caught.value).certainly_not_run


# --- under traffic ----------------------------------------------------------------------------------


def test_a_full_redis_under_traffic(student_factory, api, admin, running_reconciler):
    state = degraded_then_back(student_factory, api, admin, lambda: fill(admin), lambda: unfill(admin))
    assert ("login", 200) in state["traffic"].statuses


@pytest.mark.parametrize("serve_stale", [True, False], ids=["read-only", "master-down"])
def test_a_demoted_redis_under_traffic(student_factory, api, admin, running_reconciler, serve_stale):
    degraded_then_back(
        student_factory, api, admin, lambda: demote(admin, serve_stale=serve_stale), lambda: promote(admin)
    )


def test_a_session_started_while_redis_is_read_only_is_accepted(student_factory, admin):
    """The student's copy in Redis cannot learn the new session; it must not answer for it."""
    ben = student_factory()
    assert ben.get(SESSION).status_code == 200
    demote(admin, serve_stale=True)
    tablet = ben.on_device()
    assert tablet.login().status_code == 200
    assert device_cache_current(ben) == tokens.digest(ben.token or "").encode()  # the stale copy
    for _ in range(3):
        hotstate.breaker.reset()  # the check asks Redis, not an open breaker
        assert tablet.get(SESSION).status_code == 200
        assert ben.get(SESSION).json()["code"] == "session_replaced"


def test_a_full_redis_still_drains_an_abandoned_claim(student_factory, admin):
    """A flusher died holding a claim; new events arrived since. Under OOM the next flush adopts
    the claim, writes both events once and releases them (the release frees memory)."""
    anna = student_factory()
    assert lesson(anna, "first", "k-first").status_code == 201
    pid = anna.player_id or 0
    dead = wallet_cache.claim(claim_id=uuid.uuid4().hex, lease_seconds=-1, by_shard={hotstate.shard_of(pid): [pid]})
    assert list(dead) == [pid]  # held by a flusher whose lease has run out
    assert lesson(anna, "second", "k-second").status_code == 201
    fill(admin)

    summary = wallet_flush.wallet_flush()
    assert not summary.redis_unavailable
    assert ledger_lessons(pid) == ["first", "second"]
    assert admin.exists(wallet_cache.inflight_key(pid), wallet_cache.pending_key(pid)) == 0
    assert anna.get(WALLET).json()["xp_total"] == 30

    unfill(admin)
    wallet_flush.wallet_flush()
    assert ledger_lessons(pid) == ["first", "second"]
    assert PlayerWallet.objects.get(player_id=pid).xp_total == 30
    call_command("verify_wallets")


def test_a_demoted_redis_leaves_the_flush_for_the_next_run(student_factory, admin):
    anna = student_factory()
    assert lesson(anna, "first", "k-first").status_code == 201
    pid = anna.player_id or 0
    demote(admin, serve_stale=True)
    summary = wallet_flush.wallet_flush()
    assert summary.redis_unavailable
    assert ledger_lessons(pid) == []
    promote(admin)
    hotstate.breaker.reset()
    wallet_flush.wallet_flush()
    wallet_flush.wallet_flush()
    assert ledger_lessons(pid) == ["first"]
    call_command("verify_wallets")
