"""Test helpers for the identity half: a database that cannot be reached, a count of Redis round
trips, the student's Redis keys and parallel logins. None of them replaces MariaDB or Redis: the
database helper points the real connection at a closed port, the Redis spy lets every command run."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis.connection
from django.db import close_old_connections, connections
from rest_framework.test import APIClient

from core import hotstate
from devices import cache
from devices.models import AuthorizedDevice, PlayerAuthState, PlayerSession


def closed_port() -> int:
    """A local TCP port that nothing listens on (bound for a moment, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def database_unreachable(alias: str = "default") -> Iterator[None]:
    """Point the real connection at a closed port: every connect fails until the block ends."""
    connection = connections[alias]
    assert not connection.in_atomic_block, "use transaction=True: the test must not hold a transaction"
    connection.close()
    saved = {key: connection.settings_dict.get(key) for key in ("HOST", "PORT")}
    connection.settings_dict["HOST"] = "127.0.0.1"
    connection.settings_dict["PORT"] = str(closed_port())
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)
        connection.ensure_connection()


class RedisRoundTrips:
    """Counts what is sent to Redis: one entry per round trip (a command, a pipeline, a script)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def __len__(self) -> int:
        return len(self.sent)

    @property
    def commands(self) -> list[str]:
        """The first command word of each round trip (``EVALSHA``, ``HGET``, ...)."""
        words = []
        for packed in self.sent:
            # RESP: *<n>\r\n$<len>\r\n<WORD>\r\n...
            parts = packed.split(b"\r\n")
            words.append(parts[2].decode().upper() if len(parts) > 2 else "?")
        return words


@contextmanager
def count_redis_round_trips() -> Iterator[RedisRoundTrips]:
    """A spy on the socket writes of redis-py: the real commands still run."""
    counter = RedisRoundTrips()
    original = redis.connection.AbstractConnection.send_packed_command

    def spy(self: Any, command: Any, check_health: bool = True) -> Any:
        chunks = [command] if isinstance(command, (str, bytes)) else list(command)
        counter.sent.append(b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks))
        return original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = spy  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def auth_hash(player_id: int) -> dict[str, str]:
    raw = hotstate.connection().hgetall(cache.auth_key(player_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def wipe_player_keys(player_id: int) -> int:
    """Delete what Redis holds for this student (only this test's namespace is ever touched)."""
    return int(hotstate.connection().delete(cache.auth_key(player_id)))


def generation(player_id: int) -> int:
    state = PlayerAuthState.objects.filter(player_id=player_id).first()
    return state.generation if state else 0


def snapshot(player_id: int) -> dict[str, Any]:
    """What a refused login must not change."""
    return {
        "devices": sorted(
            AuthorizedDevice.objects.filter(player_id=player_id).values_list(
                "device_id", "revoked_at", "login_blocked", "name", "platform", "last_seen_at"
            )
        ),
        "sessions": sorted(
            PlayerSession.objects.filter(player_id=player_id).values_list("pk", "is_live", "end_reason", "ended_at")
        ),
        "generation": generation(player_id),
        "redis": auth_hash(player_id),
    }


def run_in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` real threads started together; each closes its own connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def target(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except BaseException as exc:  # reported by the caller
            results[index] = exc
        finally:
            close_old_connections()
            for connection in connections.all(initialized_only=True):
                connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return results


def login_from_new_device(username: str, password: str) -> int:
    """One app on a fresh device id logs in over HTTP; the status code."""
    client = APIClient()
    response = client.post(
        "/api/v1/auth/login/",
        {"username": username, "password": password},
        format="json",
        HTTP_X_DEVICE_ID=str(uuid.uuid4()),
    )
    return int(response.status_code)
