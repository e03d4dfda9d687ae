# ruff: noqa: S608  (table and column names come from the models, values are parameters)
"""Plumbing shared by the benchmark parts: the bench database and Redis prefix, seeding through the
services, MariaDB's counters, percentiles, the machine, and the results files the report reads."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "var" / "bench"
PASSWORD = "correct horse battery"
USERNAME = "bench_{:06d}"


def setup() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()


def command(part: str, argv: Sequence[str]) -> str:
    return f".venv/bin/python -m bench.{part} {shlex.join(argv)}".strip()


# --- database and Redis of our own ----------------------------------------------------------------


def ensure_database() -> None:
    """Create the bench database if missing and migrate it."""
    import MySQLdb
    from django.conf import settings
    from django.core.management import call_command

    db = settings.DATABASES["default"]
    if "bench" not in db["NAME"]:
        raise SystemExit(f"refusing to benchmark on database {db['NAME']!r}: its name must contain 'bench'")
    conn = MySQLdb.connect(
        host=db["HOST"] or "127.0.0.1", port=int(db["PORT"] or 3306), user=db["USER"], passwd=db["PASSWORD"] or ""
    )
    conn.cursor().execute(
        f"CREATE DATABASE IF NOT EXISTS `{db['NAME']}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    )
    conn.close()
    call_command("migrate", verbosity=0, interactive=False)


def redis_client() -> Any:
    """A plain client on the project's Redis with a generous timeout, for seeding and cleanup."""
    import redis
    from django.conf import settings

    from core.redisconn import IdentityConnection

    # Stamps what it writes with the server's identity, as the application does.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=60, connection_class=IdentityConnection)


def prefix() -> str:
    from django.conf import settings

    value = str(settings.MEMORA_REDIS_KEY_PREFIX)
    if "bench" not in value:
        raise SystemExit(f"refusing to use Redis prefix {value!r}: it must contain 'bench'")
    return value


def redis_cleanup() -> int:
    """Delete our own keys only (SCAN by prefix); the shared Redis is never flushed."""
    r = redis_client()
    deleted = 0
    batch: list[bytes] = []
    for key in r.scan_iter(match=f"{prefix()}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            deleted += r.unlink(*batch)
            batch = []
    if batch:
        deleted += r.unlink(*batch)
    return deleted


def ledger_reset() -> None:
    """An empty ledger and zeroed wallets: every flush case starts from the same state."""
    from django.db import connection

    from wallets.models import FlushRun, LedgerEvent, PlayerWallet, WalletOutbox

    with connection.cursor() as c:
        c.execute(f"TRUNCATE TABLE {LedgerEvent._meta.db_table}")
        c.execute(
            f"UPDATE {PlayerWallet._meta.db_table} SET xp_total=0, current_streak=0, longest_streak=0, "
            "last_activity_date=NULL, streak_freezes=0, version=0, generation=0"
        )
        c.execute(f"DELETE FROM {WalletOutbox._meta.db_table}")
        c.execute(f"DELETE FROM {FlushRun._meta.db_table}")


# --- students -------------------------------------------------------------------------------------


def ensure_students(n: int) -> list[int]:
    """Player ids of the bench students 0..n-1 (users ``bench_<i>``, each with a wallet row).

    Created in bulk with one precomputed Argon2 hash, as the test factories do: seeding must not
    pay 23 ms per student. Kept between runs.
    """
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User

    from players.models import PlayerProfile
    from wallets.models import PlayerWallet

    names = [USERNAME.format(i) for i in range(n)]
    have = dict(PlayerProfile.objects.filter(user__username__startswith="bench_").values_list("user__username", "pk"))
    missing = [name for name in names if name not in have]
    if missing:
        hashed = make_password(PASSWORD)
        for start in range(0, len(missing), 5000):
            part = missing[start : start + 5000]
            User.objects.bulk_create([User(username=u, password=hashed) for u in part], ignore_conflicts=True)
            users = dict(User.objects.filter(username__in=part).values_list("username", "pk"))
            PlayerProfile.objects.bulk_create(
                [PlayerProfile(user_id=users[u], display_name=u) for u in part], ignore_conflicts=True
            )
        have = dict(
            PlayerProfile.objects.filter(user__username__startswith="bench_").values_list("user__username", "pk")
        )
    pids = [have[name] for name in names]
    with_wallet = set(PlayerWallet.objects.filter(player_id__in=pids).values_list("player_id", flat=True))
    PlayerWallet.objects.bulk_create(
        [PlayerWallet(player_id=pid) for pid in pids if pid not in with_wallet], batch_size=5000, ignore_conflicts=True
    )
    return pids


def device_for(pid: int) -> str:
    """The student's one device, the same in every run (a UUID v4)."""
    return str(uuid.UUID(int=(0xBE4C << 112) | pid, version=4))


def _login_some(pids: list[int], warm_wallet: bool) -> list[tuple[int, str, str]]:
    from devices.services import session_login
    from players.models import PlayerProfile
    from wallets.sync import wallet_cache_rebuild

    out = []
    profiles = {p.pk: p for p in PlayerProfile.objects.select_related("user").filter(pk__in=pids)}
    for pid in pids:
        device = device_for(pid)
        result = session_login(profile=profiles[pid], device_id=device, device_name="bench", platform="bench")
        if warm_wallet:
            wallet_cache_rebuild(player_id=pid)
        out.append((pid, result.token, device))
    return out


def _login_worker(args: tuple[list[int], bool]) -> list[tuple[int, str, str]]:
    from django.db import connections

    connections.close_all()  # a fresh connection in the forked child
    return _login_some(*args)


def seed_sessions(pids: list[int], *, warm_wallet: bool = False, processes: int = 2) -> list[tuple[int, str, str]]:
    """Start one live session per student through ``devices.services.session_login`` (the service
    a login runs after the password check), in ``processes`` forked workers: (pid, token, device)."""
    import multiprocessing

    from django.db import connections

    if processes <= 1 or len(pids) < 200:
        return _login_some(pids, warm_wallet)
    connections.close_all()
    parts = [pids[i::processes] for i in range(processes)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        results = pool.map(_login_worker, [(part, warm_wallet) for part in parts])
    by_pid = {row[0]: row for rows in results for row in rows}
    return [by_pid[pid] for pid in pids]


# --- awards pending in Redis ---------------------------------------------------------------------


@contextlib.contextmanager
def pipelined(pipe: Any, answer: Any) -> Iterator[None]:
    """Point ``hotstate.call`` at ``pipe``: the service's Redis work is queued, not sent."""
    from core import hotstate

    original = hotstate.call

    def queue(fn: Any) -> Any:
        fn(pipe)
        return answer

    hotstate.call = queue  # type: ignore[assignment]
    try:
        yield
    finally:
        hotstate.call = original  # type: ignore[assignment]


def seed_awards(pids: list[int], awards: int) -> dict[str, Any]:
    """Every student's wallet hash through ``wallets.cache.rebuild`` (what a rebuild of a fresh
    wallet writes), then ``awards`` lessons each through ``wallets.services.wallet_award`` itself,
    round robin, with ``hotstate.call`` pointed at a Redis pipeline: the pending events are exactly
    what the award path produces; only the round trips are batched. The seeding of bench.flush and
    bench.fanout."""
    from django.conf import settings

    from core import redisconn

    # The identity refresh pipelined ahead of a command (core.redisconn) goes wrong in
    # these 2,000-command pipelines: some batches learn a wrong identity and their awards answer
    # "suspect" (seen on main too; reported). The seeding talks to one server that does not
    # change: it learns the identity once, at connect.
    redisconn.REFRESH_SECONDS = float("inf")

    from wallets import cache, idempotency, replay, rules, services
    from wallets.models import EventKind

    day = dt.datetime.now(dt.UTC).date()
    r = redis_client()
    t0 = time.perf_counter()
    fresh = {
        "xp": "0",
        "streak": "0",
        "longest": "0",
        "last": "",
        "lastd": "",
        "freezes": "0",
        "ver": "0",
        "day": day.isoformat(),
        "xpd": "0",
    }
    pipe = r.pipeline(transaction=False)
    with pipelined(pipe, 1):
        for pid in pids:
            cache.rebuild(
                pid=pid,
                generation=0,
                expected_version=None,
                fields=fresh,
                lessons=[],
                idem_records={},
                idem_ttl_ms=settings.MEMORA_IDEMPOTENCY_TTL * 1000,
            )
            if len(pipe) >= 5000:
                assert all(x == 1 for x in pipe.execute())
        assert all(x == 1 for x in pipe.execute())
    not_ok = 0
    xp = 0
    body = {"score": 80}
    base = rules.lesson_base_xp(80)
    pipe = r.pipeline(transaction=False)

    def execute() -> None:
        nonlocal not_ok, xp
        for result in pipe.execute():
            if result[0] != b"ok":
                not_ok += 1
            else:
                record = result[1].decode() if isinstance(result[1], bytes) else result[1]
                xp += replay.Answer.from_record(record).amount

    # What the award script answers (the answer's record): the service renders it while queueing.
    placeholder = replay.Answer(
        str(uuid.uuid4()), EventKind.LESSON, 0, False, None, day, rules.WalletState(0, rules.Streak(), 0)
    ).record()
    with pipelined(pipe, ["ok", placeholder]):
        # Round robin, as awards arrive: every student's j-th lesson, then the (j+1)-th.
        for j in range(awards):
            lesson = f"lesson-{j}"
            fingerprint = idempotency.fingerprint(
                method="POST", route="lesson_complete", path_params={"lesson_id": lesson}, body=body
            )
            for pid in pids:
                services.wallet_award(
                    request=services.AwardRequest(
                        player_id=pid,
                        kind=EventKind.LESSON,
                        base_amount=base,
                        local_day=day,
                        idem_scope=idempotency.scope(caller=f"p:{pid}", endpoint="lesson_complete", player_id=pid),
                        idem_key=str(uuid.uuid4()),
                        fingerprint=fingerprint,
                        lesson_id=lesson,
                        rate_limit=settings.MEMORA_RATE_LESSONS_PLAYER,
                    )
                )
                if len(pipe) >= 2000:
                    execute()
        execute()
    if not_ok:
        raise RuntimeError(f"{not_ok} seeded awards were not accepted")
    return {"seconds": round(time.perf_counter() - t0, 1), "events": len(pids) * awards, "xp": xp}


def pending_event(pid: int, n: int, day: dt.date, at: float, rng: random.Random) -> dict[str, Any]:
    """A lesson event as wallets/lua/award.lua writes it into the pending list: the n-th of student
    ``pid`` (bench.ledger_size's rows, bench.decode's input)."""
    digest = hashlib.sha256(f"{pid}:{n}".encode()).hexdigest()[:32]
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "kind": "lesson",
        "amount": 10,
        "lesson_id": f"lesson-{n % 40}",
        "reason": "",
        "local_day": day.isoformat(),
        "accepted_at": f"{at:.6f}",
        "gen": 1,
        "version": n + 1,
        "xp_total_after": 10 * (n + 1),
        "xp_day_after": 10 * (n % 20 + 1),
        "capped": False,
        "streak_after": 3,
        "longest_after": 9,
        "last_day_after": day.isoformat(),
        "freezes_after": 1,
        "break_after": 0,
        "idem": digest,
        "fp": hashlib.md5(digest.encode(), usedforsecurity=False).hexdigest(),
        "req": "",
        "actor": "",
    }


# --- measuring ------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return float(sorted_values[k])


def summary_ms(samples_ns: list[int]) -> dict[str, float]:
    values = sorted(samples_ns)
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50) / 1e6,
        "p90_ms": percentile(values, 90) / 1e6,
        "p99_ms": percentile(values, 99) / 1e6,
        "max_ms": values[-1] / 1e6 if values else float("nan"),
        "mean_ms": sum(values) / len(values) / 1e6 if values else float("nan"),
    }


@contextlib.contextmanager
def redis_round_trips() -> Iterator[list[int]]:
    """Counts round trips to Redis: every ``send_packed_command`` of redis-py's connections (a
    single command and a whole pipeline are one each)."""
    import redis.connection

    counter = [0]
    cls = redis.connection.AbstractConnection
    original = cls.send_packed_command

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return original(self, *args, **kwargs)

    cls.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        cls.send_packed_command = original  # type: ignore[method-assign]


STATUS_NAMES = (
    "Com_select",
    "Com_insert",
    "Com_update",
    "Com_delete",
    "Com_commit",
    "Innodb_rows_inserted",
    "Innodb_rows_updated",
    "Innodb_rows_read",
    "Handler_write",
    "Handler_update",
)


def mariadb_status(scope: str = "GLOBAL") -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as c:
        names = ", ".join(f"'{n}'" for n in STATUS_NAMES)
        c.execute(f"SHOW {scope} STATUS WHERE Variable_name IN ({names})")
        return {name: int(value) for name, value in c.fetchall()}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def other_db_activity(seconds: float = 2.0) -> dict[str, Any]:
    """How busy MariaDB is without us: the global write counters over an idle window of ours, and
    the other connections running a statement."""
    from django.db import connection

    before = mariadb_status()
    time.sleep(seconds)
    after = mariadb_status()
    with connection.cursor() as c:
        c.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND NOT IN ('Sleep', 'Daemon') "
            "AND ID <> CONNECTION_ID()"
        )
        active = int(c.fetchone()[0])
    d = delta(after, before)
    return {
        "window_s": seconds,
        "per_s": {
            k: round(v / seconds, 1) for k, v in d.items() if k.startswith(("Com_", "Innodb_rows_i", "Innodb_rows_u"))
        },
        "other_active_connections": active,
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    from django.db import connection

    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version()}
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with connection.cursor() as c:
        c.execute("SELECT VERSION()")
        info["mariadb"] = c.fetchone()[0]
        c.execute("SELECT @@innodb_buffer_pool_size, @@innodb_flush_log_at_trx_commit")
        pool, flush = c.fetchone()
        info["innodb_buffer_pool_mib"] = int(pool) // (1024 * 1024)
        info["innodb_flush_log_at_trx_commit"] = int(flush)
    info["redis"] = redis_client().info("server")["redis_version"]
    import django
    import rest_framework

    info["django"] = django.get_version()
    info["drf"] = rest_framework.VERSION
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
        info["wrk"] = (out.stdout + out.stderr).split("\n")[0].strip()
    return info


def save(part: str, argv: Sequence[str], data: dict[str, Any], started: float) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{part}.json"
    payload = {
        "part": part,
        "command": command(part, argv),
        "started": dt.datetime.fromtimestamp(started, tz=dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
        "machine": machine(),
        "data": data,
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"[bench] {part}: results in {path.relative_to(ROOT)}", flush=True)
    return path


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value
