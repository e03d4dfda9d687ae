"""A Redis connection that knows which server it talks to (DESIGN "When Redis goes back in time").

A Redis server's identity is its ``run_id`` (new at every start) with its ``master_replid`` (new at
every promotion). Each connection learns it when it connects, after any error reply, and at least
once a second while in use. A script argument equal to :data:`IDENTITY` is replaced by the identity
when the command is written to the connection that carries it — so a command built before a
reconnect, or sent to another server, carries the identity of the server that runs it. The
scripts compare it with the stamp on the hashes they read: a differing stamp makes the copy
suspect (Redis may have gone back in time), and it is rebuilt from the database.

Imported by the settings (no Django import here).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from redis.connection import Connection
from redis.exceptions import BusyLoadingError, MasterDownError, OutOfMemoryError, ReadOnlyError

# Replies that say the server refuses writes for now (full, demoted, loading): it may come back as
# another server (a promotion), so for a while every stamped command learns the identity first.
_REFUSALS = (ReadOnlyError, OutOfMemoryError, BusyLoadingError, MasterDownError)
_SUSPECT_SECONDS = 5.0
_suspect_until = 0.0

# The placeholder a caller passes where a script expects the identity of the server running it.
IDENTITY = "\x00memora:identity\x00"
_REFRESH_SECONDS = 1.0


def _info_field(info: Any, name: bytes) -> bytes:
    text = info if isinstance(info, bytes) else str(info).encode()
    for line in text.splitlines():
        if line.startswith(name + b":"):
            return line.split(b":", 1)[1].strip()
    return b""


class _IdentityPacker:
    def __init__(self, connection: IdentityConnection, packer: Any) -> None:
        self.connection = connection
        self.packer = packer

    def pack(self, *args: Any) -> Any:
        if IDENTITY not in args:
            return self.packer.pack(*args)
        connection = self.connection
        prefix: list[Any] = []
        if connection._sock is None:
            connection.connect()  # learns the identity of the server it reaches
        elif connection.identity is None or time.monotonic() < _suspect_until:
            # Just after a refusal the server may have been promoted since: ask before sending.
            connection._send_identity_probe()
            connection._read_identity()
        elif connection.refresh_due():
            # Asked again in the same round trip as the command; the answers are read first.
            prefix = [*self.packer.pack("INFO", "server"), *self.packer.pack("INFO", "replication")]
            connection._identity_replies += 1
            connection._identity_at = time.monotonic()
        identity = connection.identity or ""
        return [*prefix, *self.packer.pack(*(identity if a == IDENTITY else a for a in args))]


class IdentityConnection(Connection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.identity: str | None = None
        self._identity_at = 0.0
        self._identity_replies = 0  # INFO pairs sent ahead of a command, not yet read
        self._command_packer = _IdentityPacker(self, self._command_packer)

    def on_connect_check_health(self, check_health: bool = True) -> None:
        super().on_connect_check_health(check_health=check_health)
        self._identity_replies = 0
        self._send_identity_probe()
        self._read_identity()

    def disconnect(self, *args: Any) -> None:
        self.identity = None
        self._identity_at = 0.0
        self._identity_replies = 0
        super().disconnect(*args)

    def refresh_due(self) -> bool:
        return self.identity is None or time.monotonic() - self._identity_at >= _REFRESH_SECONDS

    def _send_identity_probe(self) -> None:
        packer = self._command_packer.packer
        self.send_packed_command([*packer.pack("INFO", "server"), *packer.pack("INFO", "replication")], False)

    def _read_identity(self) -> None:
        server = super().read_response()
        replication = super().read_response()
        raw = _info_field(server, b"run_id") + b"|" + _info_field(replication, b"master_replid")
        self.identity = hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:16]
        self._identity_at = time.monotonic()

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        while self._identity_replies:
            self._identity_replies -= 1
            self._read_identity()
        try:
            return super().read_response(*args, **kwargs)
        except _REFUSALS:
            # READONLY after a demotion, OOM, LOADING after a restart: whichever server answers
            # next may not be this one any more (every connection of this process asks first).
            global _suspect_until
            _suspect_until = time.monotonic() + _SUSPECT_SECONDS
            raise
