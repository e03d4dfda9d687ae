"""The production install, as an operator does it: a virtualenv from `requirements.txt` alone
(`pip install --require-hashes`), then gunicorn, a Celery worker and Celery beat with DEBUG off
against MariaDB (a database of this test's own, created and dropped here) and a private
redis-server. A student completes a lesson over HTTP; beat enqueues the flush and the **worker**
writes the award to the ledger; `/status` says ok. Every process is stopped by its PID.

The virtualenv is cached by the hash of requirements.txt (``MEMORA_SMOKE_CACHE``, default
``~/.cache/memora-player-core``): built once per lock file, not at every `make test`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import environ
import MySQLdb
import pytest

from memora.tests.redisproc import RedisProcess, free_port
from memora.tests.support import Http, Processes, poll

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 900.0  # pip on a cold cache, mysqlclient built from source, a busy machine
READY_TIMEOUT = 180.0
FLUSH_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
METRICS_TOKEN = "smoke-metrics-token-" + "m" * 24


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    # Replaces conftest's autouse fixture: this test never touches the shared Redis.
    yield ""


def _cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "memora-player-core"
    return Path(os.environ.get("MEMORA_SMOKE_CACHE") or default)


def production_venv() -> Path:
    """A virtualenv with requirements.txt and nothing else, built once per lock file's hash."""
    digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes()).hexdigest()[:16]
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / f"smoke-venv-{digest}"
    done = venv / ".complete"
    # One builder at a time (two xdist workers or two checkouts on this machine); the others wait.
    with (cache / f"smoke-venv-{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)  # a build that died half way
        # The interpreter that runs the tests (not the dev virtualenv's packages: a fresh venv).
        base_python = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=120)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
        install = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--require-hashes",
             "-r", str(ROOT / "requirements.txt")],
            env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
        )  # fmt: skip
        assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
        done.write_text(digest)
    return venv


@pytest.fixture
def smoke_database() -> Iterator[dict[str, Any]]:
    """A MariaDB database of this test's own, on the server the tests use."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("mysql"):
        pytest.skip("the production smoke test needs DATABASE_URL=mysql://... (make test sets it)")
    config = environ.Env.db_url_config(url)
    name = f"memora_smoke_{uuid.uuid4().hex[:10]}"
    server = {
        "host": config.get("HOST") or "127.0.0.1",
        "port": int(config.get("PORT") or 3306),
        "user": config.get("USER") or "root",
        "password": config.get("PASSWORD") or "",
    }
    admin = MySQLdb.connect(**server, connect_timeout=10)
    admin.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        credentials = server["user"] + (f":{server['password']}" if server["password"] else "")
        yield {**server, "name": name, "url": f"mysql://{credentials}@{server['host']}:{server['port']}/{name}"}
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def test_a_production_install_serves_a_lesson_and_its_worker_flushes_it(tmp_path: Path, smoke_database):
    venv = production_venv()
    bin_dir = venv / "bin"
    redis = RedisProcess(tmp_path / "redis", aof=True)
    redis.start()
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    # Only what an operator sets, on a clean environment: no dev virtualenv, no PYTHONPATH.
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "DJANGO_SETTINGS_MODULE": "memora_project.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "smoke-" + uuid.uuid4().hex * 2,
        "DJANGO_SECURE": "0",  # plain http on loopback; production sits behind TLS
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": smoke_database["url"],
        "REDIS_URL": redis.url,
        "MEMORA_METRICS_TOKEN": METRICS_TOKEN,
        "MEMORA_FLUSH_INTERVAL": "2",
        # A busy 2-core machine: this test is not about Redis timeouts.
        "MEMORA_REDIS_TIMEOUT": "2",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
    }
    processes = Processes(logs, cwd=ROOT, env=env)
    start = processes.start

    def manage(*args: str) -> str:
        result = subprocess.run(
            [str(bin_dir / "python"), "manage.py", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    try:
        # The installed packages are all the lock's: pip finds nothing missing or conflicting.
        pip_check = subprocess.run(
            [str(bin_dir / "python"), "-m", "pip", "check"], env=env, capture_output=True, text=True, timeout=120
        )
        assert pip_check.returncode == 0, pip_check.stdout
        manage("migrate", "--noinput")
        # The service's own deploy checks pass on this production-like setup.
        manage("check", "--deploy", "--tag", "memora", "--fail-level", "WARNING")

        # The console scripts an operator runs, from the production virtualenv.
        start("gunicorn", [str(bin_dir / "gunicorn"), "-c", "gunicorn.conf.py", "memora_project.wsgi:application"])
        start("worker", [str(bin_dir / "celery"), "-A", "memora_project", "worker", "-c", "1", "--loglevel", "INFO"])
        start("beat", [str(bin_dir / "celery"), "-A", "memora_project", "beat", "--loglevel", "INFO",
                       "-s", str(tmp_path / "celerybeat-schedule")])  # fmt: skip
        api = Http(port, timeout=30)

        def web_up() -> bool:
            processes.assert_running()
            return api.answers("/readyz")

        poll(web_up, READY_TIMEOUT, "gunicorn ready", logs)
        poll(lambda: "ready." in processes.log("worker"), READY_TIMEOUT, "worker ready", logs)

        username, password = f"smoke_{uuid.uuid4().hex[:8]}", "correct horse battery"
        status, body, _ = api.call(
            "POST", "/api/v1/auth/register/", {"username": username, "password": password, "display_name": "Smoke"}
        )
        assert status == 201, body
        device_id = str(uuid.uuid4())
        status, body, _ = api.call(
            "POST", "/api/v1/auth/login/", {"username": username, "password": password}, **{"X-Device-ID": device_id}
        )
        assert status == 200, body
        student = {"Authorization": f"Bearer {body['token']}", "X-Device-ID": device_id}
        player_id = body["player"]["id"]
        lesson = f"smoke-{uuid.uuid4().hex[:6]}"
        status, body, _ = api.call(
            "POST", f"/api/v1/lessons/{lesson}/complete/", {"score": 100}, **student, **{"Idempotency-Key": lesson}
        )
        assert status == 201, body
        event_id = body["event_id"]

        # Beat enqueues the flush; the worker runs it and writes the award to the ledger.
        db = MySQLdb.connect(
            host=smoke_database["host"], port=smoke_database["port"], user=smoke_database["user"],
            password=smoke_database["password"], database=smoke_database["name"], connect_timeout=10, autocommit=True,
        )  # fmt: skip
        try:

            def ledger() -> tuple[Any, ...] | None:
                cursor = db.cursor()
                cursor.execute(
                    "SELECT event_id, lesson_id, amount FROM wallets_ledgerevent WHERE player_id = %s",
                    (player_id,),
                )
                return cursor.fetchone()

            poll(lambda: ledger() is not None, FLUSH_TIMEOUT, "the award in the ledger", logs)
            found = ledger()
            assert found is not None
            assert (uuid.UUID(str(found[0])), found[1], found[2]) == (uuid.UUID(event_id), lesson, 15)
            cursor = db.cursor()
            cursor.execute("SELECT `trigger` FROM wallets_flushrun WHERE events > 0")
            assert {row[0] for row in cursor.fetchall()} == {"beat"}
        finally:
            db.close()
        worker_log = processes.log("worker")
        assert re.search(r"Task wallets\.tasks\.flush_wallets\[[^\]]+\] succeeded", worker_log), worker_log[-3000:]
        assert "Sending due task flush-wallets (wallets.tasks.flush_wallets)" in processes.log("beat")

        status, body, _ = api.call("GET", "/status", Authorization=f"Bearer {METRICS_TOKEN}")
        assert status == 200, body
        assert body["status"] == "ok", body
        status, body, _ = api.call("GET", "/api/v1/wallet/", **student)
        assert (status, body["xp_total"]) == (200, 15)
    finally:
        stubborn = processes.stop(timeout=STOP_TIMEOUT)
        redis.stop()
    assert not stubborn, f"did not stop on SIGTERM within {STOP_TIMEOUT:.0f} s: {stubborn}"
