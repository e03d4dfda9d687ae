"""What the process-level tests share (the embedded `make run`, the production install, the outage
end to end): a small HTTP client, waiting on a condition, named processes started with their own
log files and stopped by their PIDs. And the staff clients of the admin tests."""

from __future__ import annotations

import contextlib
import http.client
import importlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple

from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from devices.tests.factories import StaffFactory

# --- HTTP ------------------------------------------------------------------------------------------


class Reply(NamedTuple):
    status: int
    body: Any  # the decoded JSON, or the text of any other body (a 500 page, /metrics)
    headers: dict[str, str]


class Http:
    """One connection per call to a server on a loopback port."""

    def __init__(self, port: int, *, timeout: float = 15.0) -> None:
        self.port = port
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            payload = None if body is None else json.dumps(body)
            if payload is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            json_body = response.getheader("Content-Type", "").startswith("application/json")
            data = json.loads(raw) if raw and json_body else raw.decode(errors="replace")
            return Reply(response.status, data, dict(response.getheaders()))
        finally:
            conn.close()

    def answers(self, path: str, status: int = 200) -> bool:
        """True once the server answers ``path`` with ``status``; False while it refuses connections."""
        try:
            return self.call("GET", path).status == status
        except OSError:
            return False


# --- waiting ---------------------------------------------------------------------------------------


def log_tails(logs: Path | None, size: int = 3000) -> str:
    if logs is None:
        return ""
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-size:]}" for p in sorted(logs.glob("*.log")))


def poll(predicate: Callable[[], Any], limit: float, what: str = "condition", logs: Path | None = None) -> float:
    """Wait until ``predicate()`` is true (checked every 50 ms); the seconds it took. Past ``limit``,
    fail with the tails of the log files in ``logs``."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached within {limit:.0f} s\n{log_tails(logs)}")


# --- processes -------------------------------------------------------------------------------------


class Processes:
    """Named processes, each writing to ``<logs>/<name>.log``, stopped by their PIDs only."""

    def __init__(self, logs: Path, *, cwd: Path, env: Mapping[str, str]) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.logs = logs
        self.cwd = cwd
        self.env = dict(env)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[IO[bytes]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        self._files.append(log)
        proc = subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def assert_running(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}: {self.log(name)[-3000:]}"

    def stop(self, timeout: float) -> list[str]:
        """SIGTERM each live process, wait for all; SIGKILL and name those not gone in ``timeout``."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        stubborn = []
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                stubborn.append(name)
        for log in self._files:
            with contextlib.suppress(OSError):
                log.close()
        return stubborn


# --- the admin's staff ------------------------------------------------------------------------------


def support_group_ensure() -> Group:
    """The Support role of the composition app's migration. A transactional test that ran earlier
    in this process flushed the tables (Django re-creates permissions after a flush, not the
    migration's rows): then the migration's own function runs again, on the migration state."""
    group = Group.objects.filter(name="Support").first()
    if group is not None:
        return group
    migration = importlib.import_module("memora.migrations.0001_support_role")
    state = MigrationExecutor(connection).loader.project_state(("memora", "0001_support_role"))
    with connection.schema_editor() as editor:
        migration.support_role_ensure(state.apps, editor)
    return Group.objects.get(name="Support")


def staff_client(username: str, *, support: bool = False, perms: tuple[str, ...] = ()) -> tuple[Client, User]:
    """A staff member (the factories' shared hash: no Argon2 per test) logged in to the admin."""
    user = StaffFactory(username=username)
    if support:
        user.groups.add(support_group_ensure())
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client, user
