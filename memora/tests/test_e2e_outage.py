"""The operator's outage, end to end: gunicorn (two workers, each with its reconciler) and a Celery
worker on a private redis-server, driven over HTTP. Redis is killed with SIGKILL while students keep
using the app, then comes back from a stale AOF copy; the ended session is refused within 2 s and
stays refused in every worker, the wallet equals every award, and the flush writes each event once."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from devices.models import CacheOutbox
from memora.tests.redisproc import RedisProcess, free_port
from memora.tests.support import Http, Processes, Reply, poll
from wallets.models import LedgerEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack(tmp_path: Path):
    redis = RedisProcess(tmp_path / "redis", aof=True, fsync="always")
    redis.start()
    db = connection.settings_dict
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"mysql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}/{db['NAME']}",
        "REDIS_URL": redis.url,
        "CELERY_BROKER_URL": redis.url,
        "MEMORA_REDIS_KEY_PREFIX": f"e2e{uuid.uuid4().hex[:6]}",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "e2e-" + uuid.uuid4().hex * 2,
        "DJANGO_SECURE": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "MEMORA_RECONCILER_ENABLED": "1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
    }
    (tmp_path / "prom").mkdir()
    logs = tmp_path / "logs"
    processes = Processes(logs, cwd=ROOT, env=env)
    processes.start(
        "web", [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "memora_project.wsgi:application"]
    )
    worker = processes.start(
        "worker", [sys.executable, "-m", "celery", "-A", "memora_project", "worker", "-c", "1", "--loglevel", "INFO"]
    )
    api = Http(port)

    def worker_ready() -> bool:
        # The worker must be consuming before the test takes its broker (this Redis) away: a worker
        # whose start-up meets a vanished broker exits, and nothing here restarts it (on a busy
        # machine the web answers long before the worker is up).
        assert worker.poll() is None, processes.log("worker")[-3000:]
        return " ready." in processes.log("worker")

    try:
        poll(lambda: api.answers("/healthz"), 180, "gunicorn up", logs)
        poll(worker_ready, 180, "worker ready", logs)
        yield {"api": api, "redis": redis, "env": env, "tmp": tmp_path}
    finally:
        processes.stop(timeout=20)
        redis.stop()


def test_redis_killed_then_back_from_a_stale_aof(stack):
    api: Http = stack["api"]
    redis: RedisProcess = stack["redis"]
    username, password = f"e2e_{uuid.uuid4().hex[:8]}", "correct horse battery"
    assert (
        api.call("POST", "/api/v1/auth/register/", {"username": username, "password": password, "display_name": "E"})[0]
        == 201
    )
    phone_id, tablet_id = str(uuid.uuid4()), str(uuid.uuid4())
    status, body, _ = api.call(
        "POST", "/api/v1/auth/login/", {"username": username, "password": password}, **{"X-Device-ID": phone_id}
    )
    assert status == 200
    phone = {"Authorization": f"Bearer {body['token']}", "X-Device-ID": phone_id}
    player_id = body["player"]["id"]

    def award(headers: dict[str, str], lesson: str, key: str) -> Reply:
        return api.call(
            "POST", f"/api/v1/lessons/{lesson}/complete/", {"score": 100}, **headers, **{"Idempotency-Key": key}
        )

    assert award(phone, "before", "k-before")[0] == 201
    assert api.call("GET", "/api/v1/session/", **phone)[0] == 200
    stale = stack["tmp"] / "stale"
    shutil.copytree(redis.directory, stale)  # the AOF as it was before the outage
    redis.kill()

    # Students keep using the app from the database.
    assert api.call("GET", "/api/v1/session/", **phone)[0] == 200
    status, during, _ = award(phone, "during", "k-during")
    assert status == 201, during
    assert api.call("GET", "/readyz")[0] == 200
    status, body, _ = api.call(
        "POST", "/api/v1/auth/login/", {"username": username, "password": password}, **{"X-Device-ID": tablet_id}
    )
    assert status == 200
    tablet = {"Authorization": f"Bearer {body['token']}", "X-Device-ID": tablet_id}
    status, refused, _ = api.call("GET", "/api/v1/session/", **phone)
    assert (status, refused["code"]) == (401, "session_replaced")

    # Redis comes back, at the same address, from the stale AOF: it holds the phone's session as live.
    shutil.rmtree(redis.directory)
    shutil.copytree(stale, redis.directory)
    redis.start()

    # From the moment Redis is back, no answer is stale: each process that saw the outage rebuilds
    # the outbox's students before it trusts Redis again.
    deadline = time.monotonic() + 3
    rounds = 0
    while time.monotonic() < deadline:
        status, refused, _ = api.call("GET", "/api/v1/session/", **phone)
        assert (status, refused["code"]) == (401, "session_replaced"), (rounds, status, refused)
        status, body, _ = api.call("GET", "/api/v1/session/", **tablet)
        assert status == 200, (rounds, status, body)
        rounds += 1
    assert not CacheOutbox.objects.exists()
    key = f"{stack['env']['MEMORA_REDIS_KEY_PREFIX']}:{{s:{player_id % 1024}}}:auth:{player_id}"
    assert redis.client().hget(key, "cur").decode() == hashlib.sha256(tablet["Authorization"][7:].encode()).hexdigest()

    # The wallet equals every award; the key first used during the outage counts nothing now.
    wallet = api.call("GET", "/api/v1/wallet/", **tablet)
    assert wallet[0] == 200, (wallet, (stack["tmp"] / "logs" / "web.log").read_text()[-4000:])

    def wallet_total() -> Any:
        status, body, _ = api.call("GET", "/api/v1/wallet/", **tablet)
        if status != 200:
            key = f"{stack['env']['MEMORA_REDIS_KEY_PREFIX']}:{{s:{player_id % 1024}}}:auth:{player_id}"
            raise AssertionError(
                (
                    status,
                    body,
                    list(CacheOutbox.objects.values_list("player_id", "generation")),
                    redis.client().hgetall(key),
                    (stack["tmp"] / "logs" / "web.log").read_text()[-3000:],
                )
            )
        return body["xp_total"]

    assert wallet_total() == 30
    status, replay, headers = award(tablet, "during", "k-during")
    assert status == 201 and headers.get("Idempotent-Replayed") == "true"
    assert replay["event_id"] == during["event_id"]
    assert api.call("GET", "/api/v1/wallet/", **tablet)[1]["xp_total"] == 30

    # The flush, run by the Celery worker through the broker, writes each event once.
    celery = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "memora_project", "call", "wallets.tasks.flush_wallets"],
        cwd=ROOT, env=stack["env"], capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert celery.returncode == 0, celery.stderr
    poll(lambda: LedgerEvent.objects.filter(player_id=player_id).count() == 2, 180)
    assert sorted(LedgerEvent.objects.filter(player_id=player_id).values_list("lesson_id", flat=True)) == [
        "before",
        "during",
    ]
