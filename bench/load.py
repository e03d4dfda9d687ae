"""Part 3: the API under load, gunicorn (the project's gunicorn.conf.py, sync workers) on free
loopback ports and wrk rotating the tokens and device ids of students with live sessions.

Two servers run side by side, ``MEMORA_HOT_STATE=redis`` and ``=database`` (the baseline). Each
round takes turns over: the plain DRF view (the ceiling, bench/urls.py), ``GET /api/v1/wallet/``
on both servers and ``POST /api/v1/lessons/{id}/complete/`` on both (a unique Idempotency-Key per
request), every measured run after an unmeasured warm-up. Then logins per second beside the bare
Argon2 hash rate. Every server is stopped by its PID; wrk runs are bounded by ``--duration``.

    python -m bench.load [--students 10000] [--rounds 3] [--duration 10] [--warmup 3] [--workers 2]
                         [--connections 50] [--threads 2] [--login-students 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import common, profile

SCRIPT = Path(__file__).resolve().parent / "wrk" / "rotate.lua"
EXPECTED = {"plain": 200, "wallet": 200, "lesson": 201, "login": 200}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def proc_cpu(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])
    return 0


def service_pids() -> list[int]:
    """MariaDB and the shared Redis (port 6379): their CPU counts as ours, the rest as others' load."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if comm == "mariadbd" or (comm == "redis-server" and ":6379" in cmdline):
            pids.append(int(entry.name))
    return pids


class Server:
    def __init__(self, *, hot_state: str, workers: int, log_path: Path) -> None:
        self.port = free_port()
        # As `make run` and production run it: every worker's metrics in files (prometheus-client's
        # multiprocess mode), which costs more per request than in-memory counters.
        metrics_dir = log_path.parent / f"prometheus-{hot_state}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "MEMORA_HOT_STATE": hot_state,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "memora_project.wsgi:application"],
            cwd=common.ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}: see {log_path}")
            with contextlib.suppress(OSError):
                if self.request("GET", "/healthz")[0] == 200 and len(self.workers()) >= workers:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("gunicorn did not become ready in 60 s")

    def workers(self) -> list[int]:
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def request(self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stop(self) -> None:
        """SIGTERM to the master (it stops its workers), SIGKILL to our own group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def preflight(server: Server, mode: str, cred: tuple[str, str], run_id: str) -> int:
    first, device = cred
    if mode == "plain":
        return int(server.request("GET", "/api/v1/bench/plain/")[0])
    if mode == "wallet":
        return int(
            server.request(
                "GET", "/api/v1/wallet/", headers={"Authorization": f"Bearer {first}", "X-Device-ID": device}
            )[0]
        )
    if mode == "lesson":
        headers = {
            "Authorization": f"Bearer {first}",
            "X-Device-ID": device,
            "Content-Type": "application/json",
            "Idempotency-Key": f"{run_id}-preflight",
        }
        return int(
            server.request("POST", "/api/v1/lessons/bench-pre/complete/", body='{"score":80}', headers=headers)[0]
        )
    body = json.dumps({"username": first, "password": common.PASSWORD})
    return int(
        server.request(
            "POST",
            "/api/v1/auth/login/",
            body=body,
            headers={"Content-Type": "application/json", "X-Device-ID": device},
        )[0]
    )


def wrk(
    server: Server,
    *,
    mode: str,
    creds: Path,
    seconds: int,
    connections: int,
    threads: int,
    run_id: str,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    argv = [
        "wrk",
        "-t", str(threads),
        "-c", str(connections),
        "-d", f"{seconds}s",
        "--timeout", "5s",
        "-s", str(SCRIPT),
        f"http://127.0.0.1:{server.port}",
        "--", mode, str(creds), run_id, str(threads),
    ]  # fmt: skip
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, total0 = cpu_times()
    workers = server.workers()
    services = service_pids()
    workers_cpu0 = sum(proc_cpu(p) for p in workers)
    services_cpu0 = sum(proc_cpu(p) for p in services)
    # The sampler starts with wrk and stops a little before it (no sample of an idle tail).
    spy = profile.start(master_pid=server.proc.pid, seconds=seconds - 1, output=profile_to) if profile_to else None
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    busy1, total1 = cpu_times()
    workers_cpu1 = sum(proc_cpu(p) for p in workers)
    services_cpu1 = sum(proc_cpu(p) for p in services)
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRKJSON "))
    raw = json.loads(line[len("WRKJSON ") :])
    seconds_run = raw["duration_us"] / 1e6
    hz = os.sysconf("SC_CLK_TCK")
    wrk_cpu = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
    ours = (workers_cpu1 - workers_cpu0 + services_cpu1 - services_cpu0) / hz + wrk_cpu
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    result = {
        "requests": raw["requests"],
        "seconds": round(seconds_run, 2),
        "rps": raw["requests"] / seconds_run,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors,
        "non_2xx": raw["status"],
        "socket_errors": {k: raw[k] for k in ("connect", "read", "write", "timeout")},
        "machine_busy_pct": round(100 * (busy1 - busy0) / max(1, total1 - total0), 1),
        "workers_cpu_s": round((workers_cpu1 - workers_cpu0) / hz, 2),
        "wrk_cpu_s": round(wrk_cpu, 2),
        "db_redis_cpu_s": round((services_cpu1 - services_cpu0) / hz, 2),
        # CPU seconds used on this machine by everything else (other engineers' tests) during the run.
        "others_cpu_s": round(max(0.0, (busy1 - busy0) / hz - ours), 2),
        "command": " ".join(argv[:-5]).replace(str(common.ROOT) + "/", "")
        + f" -- {mode} <credentials> <run> {threads}",
    }
    if profile_to is not None:
        result["profile"] = profile.finish(spy, profile_to, requests=raw["requests"])
    return result


def _hash_loop(n: int) -> tuple[float, float]:
    """(verifies per second of wall time, CPU milliseconds per verify) in this process."""
    from django.contrib.auth.hashers import get_hasher

    hasher = get_hasher("argon2")
    encoded = hasher.encode(common.PASSWORD, hasher.salt())
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        hasher.verify(common.PASSWORD, encoded)
    return n / (time.perf_counter() - t0), 1000 * (time.process_time() - c0) / n


def hash_rates(n: int, processes: int | None = None) -> dict[str, Any]:
    """The bare Argon2 verify rate of players.hashers.MemoraArgon2PasswordHasher: one process, and
    ``processes`` at once (the gunicorn workers' count: the same processes as the logins)."""
    from django.contrib.auth.hashers import get_hasher

    hasher = get_hasher("argon2")
    one, one_cpu_ms = _hash_loop(n)
    processes = processes or os.cpu_count() or 1
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        rates = pool.map(_hash_loop, [n] * processes)
    return {
        "hasher": f"{type(hasher).__module__}.{type(hasher).__name__}",
        "params": {"time_cost": hasher.time_cost, "memory_kib": hasher.memory_cost, "parallelism": hasher.parallelism},
        "one_process_per_s": one,
        "ms_per_hash": 1000 / one,
        "cpu_ms_per_hash": min([one_cpu_ms, *(cpu for _, cpu in rates)]),
        "all_cores_per_s": sum(rate for rate, _ in rates),
        "processes": processes,
    }


def login_rounds(
    server: Server, *, creds: Path, args: argparse.Namespace, profile_dir: Path | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Logins/s and the bare hash rate taken in turns (login run, then the hash with the workers
    idle), so that each round's ratio sees the same machine noise on both sides."""
    logins, hashes = [], []
    for round_no in range(1, args.login_rounds + 1):
        result = wrk(
            server,
            mode="login",
            creds=creds,
            seconds=args.duration,
            connections=args.login_connections,
            threads=args.threads,
            run_id=f"login{round_no}",
            profile_to=profile_dir / f"login-{round_no}.txt" if profile_dir else None,
        )
        bare = hash_rates(args.hash_samples, processes=args.workers)
        cpu_per_login = 1000 * result["workers_cpu_s"] / max(1, result["requests"])
        result.update(
            round=round_no,
            over_hash_rate=result["rps"] / bare["all_cores_per_s"],
            workers_cpu_ms_per_login=round(cpu_per_login, 2),
            # What a login costs the workers besides its one hash (bare CPU ms of that hash, same round).
            non_hash_cpu_ms_per_login=round(cpu_per_login - bare["cpu_ms_per_hash"], 2),
            db_redis_cpu_ms_per_login=round(1000 * result["db_redis_cpu_s"] / max(1, result["requests"]), 2),
        )
        logins.append(result)
        hashes.append(bare)
        common.log(
            f"load: login round {round_no}: {result['rps']:.1f} logins/s, bare hash {bare['all_cores_per_s']:.1f}/s "
            f"({100 * result['over_hash_rate']:.0f} %), workers {cpu_per_login:.1f} CPU ms/login "
            f"(hash {bare['cpu_ms_per_hash']:.1f}), p99 {result['p99_ms']:.0f} ms, errors {result['errors']}, "
            f"others {result['others_cpu_s']} CPU s"
        )
    return logins, hashes


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=10000, help="students with live sessions (default 10000)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured wrk before each run")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (default 2)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each takes turns over every scenario")
    parser.add_argument("--modes", default="redis,database", help="hot-state modes, in order")
    parser.add_argument("--scenarios", default="plain,wallet,lesson")
    parser.add_argument("--login-students", type=int, default=1000, help="students used by the login run (0: skip)")
    parser.add_argument("--hash-samples", type=int, default=100, help="Argon2 verifies per process")
    # A login costs ~25 ms of hash: 50 connections on 2 workers would queue each one for seconds
    # (wrk's 5 s timeout counts them as errors on a busy machine); 10 keep both workers busy.
    parser.add_argument("--login-connections", type=int, default=10, help="wrk connections of the login runs")
    parser.add_argument("--login-rounds", type=int, default=3, help="login runs, each followed by the bare hash rate")
    parser.add_argument("--profile", action="store_true", help="py-spy the workers during each measured run")
    args = parser.parse_args(argv)
    started = time.time()
    common.setup()
    common.ensure_database()
    common.redis_cleanup()
    common.ledger_reset()

    out_dir = common.RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    pids = common.ensure_students(args.students + args.login_students)
    common.log(f"load: seeding {args.students} live sessions (session_login) and their Redis wallets")
    t_seed, sessions = common.timed(lambda: common.seed_sessions(pids[: args.students], warm_wallet=True))
    creds = out_dir / "tokens.txt"
    creds.write_text("".join(f"{token} {device}\n" for _, token, device in sessions))
    login_creds = out_dir / "logins.txt"
    login_creds.write_text(
        "".join(f"{common.USERNAME.format(i)} {common.device_for(pids[i])}\n" for i in range(args.students, len(pids)))
    )
    first_cred = (sessions[0][1], sessions[0][2])
    runs: list[dict[str, Any]] = []
    logins: dict[str, Any] = {}
    login_runs: list[dict[str, Any]] = []
    hash_runs: list[dict[str, Any]] = []
    scenarios = args.scenarios.split(",")
    modes = args.modes.split(",")
    # Both servers run side by side (an idle one costs nothing) so that every round takes turns
    # between them: the machine's noise then falls on the fast path and its baselines alike.
    servers: dict[str, Server] = {}
    try:
        for hot in modes:
            servers[hot] = Server(hot_state=hot, workers=args.workers, log_path=out_dir / f"gunicorn-{hot}.log")
            common.log(f"load: {hot} mode: gunicorn pid {servers[hot].proc.pid} on port {servers[hot].port}")
        plan = [(hot, sc) for sc in scenarios for hot in modes if not (sc == "plain" and hot != modes[0])]
        for round_no in range(args.rounds):
            for hot, scenario in plan:
                server = servers[hot]
                run_id = f"{int(time.time() * 1000)}{hot[0]}{round_no}"
                status = preflight(server, scenario, first_cred, run_id)
                if status != EXPECTED[scenario]:
                    raise RuntimeError(f"{scenario} in {hot} mode answered {status}: see var/bench/gunicorn-{hot}.log")
                common_args: dict[str, Any] = {"creds": creds, "connections": args.connections, "threads": args.threads}
                wrk(server, mode=scenario, seconds=args.warmup, run_id=run_id + "w", **common_args)
                profile_to = out_dir / f"{scenario}-{hot}-{round_no + 1}.txt" if args.profile else None
                result = wrk(
                    server, mode=scenario, seconds=args.duration, run_id=run_id, profile_to=profile_to, **common_args
                )
                result.update(round=round_no + 1, hot_state=hot, scenario=scenario, workers=args.workers)
                runs.append(result)
                common.log(
                    f"load: {round_no + 1} {hot:8} {scenario:6} {result['rps']:7.0f} req/s p50 {result['p50_ms']:.1f} "
                    f"p99 {result['p99_ms']:.1f} max {result['max_ms']:.0f} ms errors {result['errors']} "
                    f"busy {result['machine_busy_pct']}% others {result['others_cpu_s']} CPU s"
                )
        if args.login_students and "redis" in servers:
            server = servers["redis"]
            first_login = login_creds.read_text().split("\n")[0].split()
            status = preflight(server, "login", (first_login[0], first_login[1]), "x")
            if status != EXPECTED["login"]:
                raise RuntimeError(f"login answered {status}: see var/bench/gunicorn-redis.log")
            login_runs, hash_runs = login_rounds(
                server, creds=login_creds, args=args, profile_dir=out_dir if args.profile else None
            )
    finally:
        for server in servers.values():
            server.stop()
    if login_runs:
        # The round with the median ratio stands for the run; every round is kept beside it.
        middle = sorted(range(len(login_runs)), key=lambda i: login_runs[i]["over_hash_rate"])[len(login_runs) // 2]
        logins, hashes = login_runs[middle], hash_runs[middle]
    else:
        common.log("load: bare Argon2 hash rate")
        hashes = hash_rates(args.hash_samples, processes=args.workers)
    removed = common.redis_cleanup()
    common.log(f"load: removed {removed} keys of ours from Redis")

    def pick(hot: str, scenario: str, round_no: int) -> dict[str, Any] | None:
        return next((r for r in runs if (r["hot_state"], r["scenario"], r["round"]) == (hot, scenario, round_no)), None)

    ratios = []
    for round_no in range(1, args.rounds + 1):
        plain = pick("redis", "plain", round_no)
        entry: dict[str, Any] = {"round": round_no}
        for scenario in ("wallet", "lesson"):
            fast, slow = pick("redis", scenario, round_no), pick("database", scenario, round_no)
            if fast and plain:
                entry[f"{scenario}_over_plain"] = fast["rps"] / plain["rps"]
            if fast and slow:
                entry[f"{scenario}_over_database"] = fast["rps"] / slow["rps"]
        wallet, lesson = pick("redis", "wallet", round_no), pick("redis", "lesson", round_no)
        if wallet and lesson:
            # The same two round trips (the device + session check, one wallet script): DESIGN v3.
            entry["lesson_over_wallet"] = lesson["rps"] / wallet["rps"]
        ratios.append(entry)
    data = {
        "students": args.students,
        "workers": args.workers,
        "connections": args.connections,
        "threads": args.threads,
        "seed_seconds": round(t_seed, 1),
        "runs": runs,
        "ratios": ratios,
        "logins": logins,
        "hash": hashes,
        "login_rounds": login_runs,
        "hash_rounds": hash_runs,
    }
    common.save("load", argv if argv is not None else sys.argv[1:], data, started)
    print(json.dumps({"ratios": ratios, "logins_per_s": logins.get("rps"), "hash": hashes}, indent=2))
    return data


if __name__ == "__main__":
    main()
