"""Manual check: the journey over HTTP (gunicorn x2 + a Celery worker with its broker on a plain
private Redis) against a local 3-master Cluster or a Sentinel set whose master is killed mid-traffic.

    .venv/bin/python bench/drill.py cluster|sentinel   (from the checkout; MariaDB on 127.0.0.1:3306 as root)
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))
import MySQLdb  # noqa: E402

from memora.tests.redisproc import ClusterProcesses, RedisProcess, SentinelSet, free_port, wait_for  # noqa: E402

mode = sys.argv[1]
tmp = Path(tempfile.mkdtemp(prefix=f"e2e-{mode}-"))
DB = f"memora_e2e_{mode}"
PY = str(ROOT / ".venv" / "bin" / "python")
BIN = ROOT / ".venv" / "bin"


def call(port, method, path, body=None, **headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        try:
            return r.status, (json.loads(raw) if raw else None)
        except ValueError:
            return r.status, raw[:300]
    finally:
        conn.close()


admin = MySQLdb.connect(host="127.0.0.1", user="root", password="")
admin.cursor().execute(f"DROP DATABASE IF EXISTS `{DB}`")
admin.cursor().execute(f"CREATE DATABASE `{DB}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")

broker = RedisProcess(tmp / "broker")
broker.start()
env = {
    **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
    "DJANGO_SETTINGS_MODULE": "memora_project.settings",
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "e2e-" + uuid.uuid4().hex * 2,
    "DJANGO_SECURE": "0",
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
    "DATABASE_URL": f"mysql://root@127.0.0.1:3306/{DB}",
    "CELERY_BROKER_URL": broker.url,
    "MEMORA_REDIS_TIMEOUT": "1",
    "MEMORA_FLUSH_INTERVAL": "3",
    "MEMORA_RATE_LESSONS_PLAYER": "1000000",
    "MEMORA_RATE_LOGIN_IP": "1000000",
    "MEMORA_RATE_REGISTER_IP": "1000000",
    "WEB_CONCURRENCY": "2",
    "MEMORA_METRICS_TOKEN": "m" * 40,
}
if mode == "cluster":
    topo = ClusterProcesses(tmp / "cluster")
    topo.start()
    env["MEMORA_REDIS_CLUSTER"] = "1"
    env["REDIS_URL"] = topo.url
else:
    topo = SentinelSet(tmp / "sentinel")
    topo.start()
    env["MEMORA_REDIS_SENTINELS"] = ",".join(f"{h}:{p}" for h, p in topo.addresses)
    env["MEMORA_REDIS_SENTINEL_SERVICE"] = topo.service
    env["REDIS_URL"] = "redis://127.0.0.1:6379/0"  # ignored under Sentinel but for the db number

port = free_port()
env["PORT"] = str(port)
procs = {}
logs = tmp / "logs"
logs.mkdir()


def start(name, argv):
    procs[name] = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=(logs / f"{name}.log").open("wb"), stderr=subprocess.STDOUT
    )


def stop_all():
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
    topo.stop()
    broker.stop()


try:
    subprocess.run([PY, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True)
    start("gunicorn", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "memora_project.wsgi:application"])
    start("worker", [str(BIN / "celery"), "-A", "memora_project", "worker", "-c", "1", "--loglevel", "INFO"])
    wait_for(lambda: call(port, "GET", "/healthz")[0] == 200, "web up", 120)
    wait_for(lambda: "ready" in (logs / "worker.log").read_text(), "worker ready", 120)
    statuses = Counter()
    students = []
    for i in range(12):
        name = f"e2e{mode}{i}"
        dev = str(uuid.uuid4())
        s, b = call(
            port,
            "POST",
            "/api/v1/auth/register/",
            {"username": name, "password": "correct horse battery", "display_name": name, "timezone": "Europe/Paris"},
        )
        assert s == 201, (s, b)
        s, b = call(
            port,
            "POST",
            "/api/v1/auth/login/",
            {"username": name, "password": "correct horse battery", "device_name": "p", "platform": "android"},
            **{"X-Device-ID": dev},
        )
        assert s == 200, (s, b)
        students.append({"id": b["player"]["id"], "name": name, "dev": dev, "token": b["token"]})
    print("12 students registered and logged in")

    def h(st):
        return {"Authorization": f"Bearer {st['token']}", "X-Device-ID": st["dev"]}

    sent = Counter()
    stop = threading.Event()

    def traffic(st, n):
        k = 0
        while not stop.is_set() and k < n:
            k += 1
            key = str(uuid.uuid4())
            s, b = call(
                port, "POST", f"/api/v1/lessons/l{k}/complete/", {"score": 90}, **h(st), **{"Idempotency-Key": key}
            )
            statuses[("lesson", s)] += 1
            if s == 201:
                sent[st["id"]] += 1
            elif s >= 500 and s != 503:
                print("BAD", s, b)
            s, b = call(port, "GET", "/api/v1/wallet/", **h(st))
            statuses[("wallet", s)] += 1
            s, b = call(port, "GET", "/api/v1/session/", **h(st))
            statuses[("session", s)] += 1

    threads = [threading.Thread(target=traffic, args=(st, 25)) for st in students[:8]]
    for t in threads:
        t.start()
    if mode == "sentinel":
        time.sleep(2)
        old = topo.master_port()
        node = topo.master if topo.master.port == old else topo.replica
        print("killing master on", old)
        node.kill()
        new = wait_for(lambda: topo.promoted(old), "promotion", 120)
        print("promoted", new)
    for t in threads:
        t.join()
    print("statuses", dict(statuses))
    assert not any(s >= 500 and s != 503 for (_, s) in statuses), statuses
    # logout one, the ended token is refused
    st = students[0]
    s, _ = call(port, "POST", "/api/v1/auth/logout/", **h(st))
    print("logout", s)
    s, b = call(port, "GET", "/api/v1/wallet/", **h(st))
    print("after logout", s, b and b.get("error", b))
    # a second login replaces the session of student 1
    st1 = students[1]
    s, b = call(
        port,
        "POST",
        "/api/v1/auth/login/",
        {"username": st1["name"], "password": "correct horse battery", "device_name": "p", "platform": "android"},
        **{"X-Device-ID": st1["dev"]},
    )
    s2, b2 = call(port, "GET", "/api/v1/wallet/", **h(st1))
    print("replaced session", s2, b2 and b2.get("code"))
    # flush through the worker
    r = subprocess.run(
        [str(BIN / "celery"), "-A", "memora_project", "call", "wallets.tasks.flush_wallets"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    print("celery call", r.returncode, r.stdout.strip()[:80])

    def flushed():
        c = MySQLdb.connect(host="127.0.0.1", user="root", password="", database=DB)
        cur = c.cursor()
        cur.execute("SELECT player_id, COUNT(*) FROM wallets_ledgerevent GROUP BY player_id")
        rows = dict(cur.fetchall())
        cur.execute("SELECT player_id, xp_total FROM wallets_playerwallet")
        w = dict(cur.fetchall())
        c.close()
        return (rows, w) if all(rows.get(pid, 0) >= n for pid, n in sent.items()) else None

    rows, wallets = wait_for(flushed, "flush", 180)
    print("ledger lesson rows per student", rows)
    print("sent 201 per student", dict(sent))
    assert all(rows[pid] == n for pid, n in sent.items()), "ledger rows differ from 201s"
    over = {}
    for st in students[2:8]:
        s, b = call(port, "GET", "/api/v1/wallet/", **h(st))
        over[st["id"]] = (b["xp_total"], wallets.get(st["id"]))
    print("wallet over HTTP vs DB", over)
    assert all(a == b for a, b in over.values())
    r = subprocess.run([PY, "manage.py", "verify_wallets"], cwd=ROOT, env=env, capture_output=True, text=True)
    print("verify_wallets", r.returncode, r.stdout.strip()[-300:])
    s, b = call(port, "GET", "/status", Authorization="Bearer " + "m" * 40)
    print("status", s, json.dumps(b)[:600])
    if mode == "cluster":
        counts = [n.client().dbsize() for n in topo.nodes]
        print("keys per node", counts)
        assert all(c > 0 for c in counts)
    print("OK", mode)
finally:
    stop_all()
    admin.cursor().execute(f"DROP DATABASE IF EXISTS `{DB}`")
