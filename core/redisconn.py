"""A Redis connection that knows which server it talks to (DESIGN "When Redis goes back in time").

A Redis server's identity is its ``run_id`` (new at every start) with its ``master_replid`` (new at
every promotion). Each connection learns it when it connects, after any error reply, and at least
once a second while in use. A script argument equal to :data:`IDENTITY` is replaced by the identity
when the command is written to the connection that carries it — so a command built before a
reconnect, or sent to another server, carries the identity of the server that runs it. The
scripts compare it with the stamp on the hashes they read: a differing stamp makes the copy
suspect (Redis may have gone back in time), and it is rebuilt from the database.

The same behaviour serves a plain connection (:class:`IdentityConnection`), a Sentinel-managed one
(:class:`SentinelIdentityConnection`) and each node of a Redis Cluster. At connect it also loads
every registered Lua script (:func:`register_script`), so an EVALSHA — which redis-py's
``ClusterPipeline`` cannot load on its own — meets NOSCRIPT only after a ``SCRIPT FLUSH``.

Imported by the settings (no Django import here).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Any

from redis.connection import Connection
from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.sentinel import SentinelManagedConnection

# Replies that say the server refuses writes for now (full, demoted, loading): it may come back as
# another server (a promotion), so for a while every stamped command learns the identity first.
_REFUSALS = (ReadOnlyError, OutOfMemoryError, BusyLoadingError, MasterDownError)
_SUSPECT_SECONDS = 5.0
_suspect_until = 0.0

# The placeholder a caller passes where a script expects the identity of the server running it.
IDENTITY = "\x00memora:identity\x00"
# How often a connection re-learns its server's identity (a pipelined probe). Public: the
# benchmarks' seeding turns it off (inf) so that a pipeline of queued awards carries no probe.
REFRESH_SECONDS = 1.0

# Every Lua script of the service, by SHA1: loaded on each connection's server when it connects.
SCRIPTS: dict[str, str] = {}


def register_script(source: str) -> str:
    """Remember a script for loading at connect; its SHA1 (what EVALSHA names)."""
    sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    SCRIPTS[sha] = source
    return sha


def _refused(exc: Exception) -> bool:
    # redis-py's Sentinel connection turns READONLY from a demoted master into a ConnectionError.
    return isinstance(exc, _REFUSALS) or (
        isinstance(exc, ConnectionError) and isinstance(exc.__context__, ReadOnlyError)
    )


def _info_field(info: Any, name: bytes) -> bytes:
    text = info if isinstance(info, bytes) else str(info).encode()
    for line in text.splitlines():
        if line.startswith(name + b":"):
            return line.split(b":", 1)[1].strip()
    return b""


class _IdentityPacker:
    def __init__(self, connection: IdentityMixin, packer: Any) -> None:
        self.connection = connection
        self.packer = packer

    def prefix(self) -> list[Any]:
        """What must go ahead of a stamped command (or pipeline) for the identity to be current:
        nothing (known, fresh), an INFO pair sent in the same round trip and read first (a second
        old), or a round trip now (unknown, or just after a refusal: the server may have been
        promoted since)."""
        connection = self.connection
        if connection._sock is None:
            connection.connect()  # learns the identity of the server it reaches
        elif connection.identity is None or time.monotonic() < _suspect_until:
            connection._send_identity_probe()
            connection._read_identity()
        elif connection.refresh_due():
            connection._identity_replies += 1
            connection._identity_at = time.monotonic()
            return [*self.packer.pack("INFO", "server"), *self.packer.pack("INFO", "replication")]
        return []

    def pack(self, *args: Any) -> Any:
        if IDENTITY not in args:
            return self.packer.pack(*args)
        connection = self.connection
        # In a pipeline the probe goes ahead of the whole batch (pack_commands), where its answers
        # are read first; ahead of a later command they would be read as an earlier one's.
        prefix = [] if connection._packing_batch else self.prefix()
        identity = connection.identity or ""
        return [*prefix, *self.packer.pack(*(identity if a == IDENTITY else a for a in args))]


class IdentityMixin:
    """The identity behaviour, mixed into a redis-py Connection class (plain or Sentinel-managed)."""

    _sock: Any
    _command_packer: Any
    connect: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.identity: str | None = None
        self._identity_at = 0.0
        self._identity_replies = 0  # INFO pairs sent ahead of a command, not yet read
        self._packing_batch = False
        self._command_packer = _IdentityPacker(self, self._command_packer)

    def pack_commands(self, commands: Any) -> Any:
        """A pipeline: a probe it needs goes first, so its answers are the first read."""
        commands = list(commands)
        if not any(IDENTITY in args for args in commands):
            return super().pack_commands(commands)  # type: ignore[misc]
        prefix = self._command_packer.prefix()
        self._packing_batch = True
        try:
            packed = super().pack_commands(commands)  # type: ignore[misc]
        finally:
            self._packing_batch = False
        return [*prefix, *packed]

    def on_connect_check_health(self, check_health: bool = True) -> None:
        super().on_connect_check_health(check_health=check_health)  # type: ignore[misc]
        self._identity_replies = 0
        # One round trip: the identity and every script (a refused load is retried on NOSCRIPT).
        packer = self._command_packer.packer
        scripts = list(SCRIPTS.values())
        loads = [part for source in scripts for part in packer.pack("SCRIPT", "LOAD", source)]
        self.send_packed_command(  # type: ignore[attr-defined]
            [*packer.pack("INFO", "server"), *packer.pack("INFO", "replication"), *loads], False
        )
        self._read_identity()
        for _ in scripts:
            with contextlib.suppress(ResponseError, BusyLoadingError):
                super().read_response()  # type: ignore[misc]

    def disconnect(self, *args: Any) -> None:
        self.identity = None
        self._identity_at = 0.0
        self._identity_replies = 0
        super().disconnect(*args)  # type: ignore[misc]

    def refresh_due(self) -> bool:
        return self.identity is None or time.monotonic() - self._identity_at >= REFRESH_SECONDS

    def _send_identity_probe(self) -> None:
        packer = self._command_packer.packer
        self.send_packed_command(  # type: ignore[attr-defined]
            [*packer.pack("INFO", "server"), *packer.pack("INFO", "replication")], False
        )

    def _read_identity(self) -> None:
        server = super().read_response()  # type: ignore[misc]
        replication = super().read_response()  # type: ignore[misc]
        raw = _info_field(server, b"run_id") + b"|" + _info_field(replication, b"master_replid")
        self.identity = hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:16]
        self._identity_at = time.monotonic()

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        while self._identity_replies:
            self._identity_replies -= 1
            self._read_identity()
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except Exception as exc:
            if _refused(exc):
                # READONLY after a demotion, OOM, LOADING after a restart: whichever server answers
                # next may not be this one any more (every connection of this process asks first).
                global _suspect_until
                _suspect_until = time.monotonic() + _SUSPECT_SECONDS
            raise


class IdentityConnection(IdentityMixin, Connection):
    """A plain TCP connection (a single Redis, or one node of a Redis Cluster)."""


class SentinelIdentityConnection(IdentityMixin, SentinelManagedConnection):
    """A connection to the master a Sentinel names: after a failover it reconnects to the new
    master (redis-py drops it on READONLY) and learns that server's identity."""
