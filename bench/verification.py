"""Part 2 (and the verification half of part 5): the per-request device + session check in process.

Beside it, in interleaved blocks of the same run: DRF's TokenAuthentication plus a database device
lookup (the baseline) and a bare redis-py EVALSHA on the same connection pool (the floor). Round
trips are counted by wrapping redis-py's ``send_packed_command``, queries with
``CaptureQueriesContext``, on a separate pass so that counting does not slow the timed calls.
Then the same check with ``--big`` students' sessions in Redis (the extra ones written by the
cache's own WRITE script, cloned from a real student's snapshot), against the floor again.

In the same blocks, the same check on a local 3-master Redis Cluster (DESIGN v3, "Beyond one
machine"), other students' sessions seeded on it: the Cluster started by the tests' own helper
(``memora.tests.redisproc.ClusterProcesses``, without AOF like the shared Redis it is compared with)
on free loopback ports and stopped by PID; the app's own Cluster client (``MEMORA_REDIS_CLUSTER``),
the app pointed there for the Cluster's blocks only. Then Redis's own time per check on the
masters (``INFO commandstats``), the unit docs/SCALING.md sizes from. ``--no-cluster`` skips it.

    python -m bench.verification [--students 1000] [--calls 20000] [--big 100000] [--no-cluster]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common

FLOOR_LUA = "return 1"


def _blocks(
    methods: dict[str, Callable[[int], Any]],
    *,
    calls: int,
    block: int,
    sizes: dict[str, int],
    hooks: dict[str, Callable[[], None]] | None = None,
) -> dict[str, list[int]]:
    """Time each call; the methods take turns in blocks of ``block`` calls so that the machine's
    noise falls on all of them alike (``hooks[name]`` runs, untimed, before each of its blocks)."""
    samples: dict[str, list[int]] = {name: [] for name in methods}
    position = dict.fromkeys(methods, 0)
    clock = time.perf_counter_ns
    done = 0
    while done < calls:
        n = min(block, calls - done)
        for name, fn in methods.items():
            if hooks and name in hooks:
                hooks[name]()
            out = samples[name]
            i = position[name]
            size = sizes[name]
            for _ in range(n):
                t0 = clock()
                fn(i % size)
                out.append(clock() - t0)
                i += 1
            position[name] = i
        done += n
    return samples


def _count(fn: Callable[[int], Any], n: int, size: int) -> dict[str, float]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with common.redis_round_trips() as trips, CaptureQueriesContext(connection) as queries:
        for i in range(n):
            fn(i % size)
    return {"redis_round_trips": trips[0] / n, "db_queries": len(queries.captured_queries) / n}


def _ratios(t: dict[str, dict[str, float]]) -> dict[str, float]:
    return {
        "speedup_p50_vs_token_auth": t["token_auth_plus_device"]["p50_ms"] / t["verify"]["p50_ms"],
        "speedup_mean_vs_token_auth": t["token_auth_plus_device"]["mean_ms"] / t["verify"]["mean_ms"],
        "p99_over_evalsha_p99": t["verify"]["p99_ms"] / t["bare_evalsha"]["p99_ms"],
    }


def per_second(summary: dict[str, float]) -> float:
    """Calls per second of one process calling back to back (the mean's inverse)."""
    return 1000.0 / summary["mean_ms"]


def cluster_versus_single(
    single: dict[str, dict[str, float]], cluster: dict[str, dict[str, float]]
) -> dict[str, float]:
    """The Cluster's figures over single Redis's, same run: verify's p50, p99 and calls/s, and the
    bare EVALSHA's p50 (what the Cluster client adds to any one call)."""
    s, c = single["verify"], cluster["verify"]
    return {
        "p50": c["p50_ms"] / s["p50_ms"],
        "p99": c["p99_ms"] / s["p99_ms"],
        "per_s": per_second(c) / per_second(s),
        "bare_evalsha_p50": cluster["bare_evalsha"]["p50_ms"] / single["bare_evalsha"]["p50_ms"],
    }


class Topology:
    """Points the app's hot state at the shared single Redis or at a local Cluster, between blocks:
    ``hotstate.connection()`` remembers one client per location, so both stay open and warm."""

    def __init__(self, cluster_url: str) -> None:
        from django.conf import settings

        from memora_project.settings import redis_cache

        self.settings = settings
        self.single = (settings.CACHES, False)
        self.cluster = ({"default": redis_cache(cluster_url)}, True)

    def point(self, cluster: bool) -> None:
        self.settings.CACHES, self.settings.MEMORA_REDIS_CLUSTER = self.cluster if cluster else self.single


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=1000, help="students with a live session (default 1000)")
    parser.add_argument("--calls", type=int, default=20000, help="timed calls per method (default 20000)")
    parser.add_argument("--block", type=int, default=1000, help="calls per interleaved block")
    parser.add_argument(
        "--big", type=int, default=100000, help="students in Redis for the growth point (0: skip; default 100000)"
    )
    parser.add_argument("--no-cluster", action="store_true", help="skip the same measurement on a 3-master Cluster")
    argv = argv if argv is not None else sys.argv[1:]
    args = parser.parse_args(argv)
    started = time.time()
    common.setup()
    common.ensure_database()
    common.redis_cleanup()
    with contextlib.ExitStack() as stack:
        servers = None
        if not args.no_cluster:
            from memora.tests.redisproc import ClusterProcesses

            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cluster-")))
            servers = ClusterProcesses(home)
            for node in servers.nodes:
                # The shared single Redis it is compared with keeps no AOF: neither do these (the
                # tests' Cluster fsyncs every write, which would time the disk, not the Cluster).
                node.aof = False
            stack.callback(servers.stop)  # by PID, whatever happens
            common.log("verification: starting a 3-master Redis Cluster on loopback ports")
            servers.start()
        data = _measure(args, servers)
    removed = common.redis_cleanup()
    common.log(f"verification: removed {removed} keys of ours from Redis")
    common.save("verification", argv, data, started)
    print(json.dumps({k: data[k] for k in ("timing", "ratios", "counts")}, indent=2))
    if "cluster" in data:
        print(json.dumps({"cluster": data["cluster"]}, indent=2))
    return data


def _measure(args: argparse.Namespace, servers: Any) -> dict[str, Any]:
    from django.conf import settings
    from django.test import RequestFactory
    from rest_framework.authentication import TokenAuthentication
    from rest_framework.authtoken.models import Token

    from core import hotstate
    from core.redisconn import IDENTITY
    from devices import cache, selectors, tokens, verification
    from devices.models import AuthorizedDevice
    from players.models import PlayerProfile

    common.log(f"verification: seeding {args.students} live sessions through session_login")
    pids = common.ensure_students(args.students * (2 if servers else 1))
    pids, cluster_pids = pids[: args.students], pids[args.students :]
    sessions = common.seed_sessions(pids)
    users = dict(PlayerProfile.objects.filter(pk__in=pids).values_list("pk", "user_id"))
    keys = dict(Token.objects.filter(user_id__in=users.values()).values_list("user_id", "key"))
    Token.objects.bulk_create(
        [Token(user_id=u, key=Token.generate_key()) for u in users.values() if u not in keys], batch_size=2000
    )
    keys = dict(Token.objects.filter(user_id__in=users.values()).values_list("user_id", "key"))

    factory = RequestFactory()
    bearer = [(f"Bearer {token}", device) for _, token, device in sessions]
    drf = [
        (factory.get("/api/v1/wallet/", HTTP_AUTHORIZATION=f"Token {keys[users[pid]]}"), uuid.UUID(device))
        for pid, _, device in sessions
    ]
    auth = TokenAuthentication()
    client = hotstate.connection()
    floor_sha = client.script_load(FLOOR_LUA)
    paths: dict[str, int] = {}

    def check(i: int, table: list[tuple[str, str]] = bearer) -> None:
        authorization, device = table[i]
        principal = verification.verify(authorization=authorization, device_header=device)
        paths[principal.path] = paths.get(principal.path, 0) + 1

    def token_and_device(i: int) -> None:
        request, device = drf[i]
        user, _ = auth.authenticate(request)  # type: ignore[misc]
        if not AuthorizedDevice.objects.filter(
            player__user_id=user.pk, device_id=device, revoked_at__isnull=True
        ).exists():
            raise AssertionError("device not found")

    def floor(i: int) -> None:
        client.evalsha(floor_sha, 0)

    # The check's own Lua script through bare redis-py (same keys and arguments as verify sends):
    # splits verify's time between the script's work in Redis and verify's Python around it.
    check_sha = client.script_load(cache.check_script.source)
    lua_calls = []
    for _, token, device in sessions:
        parsed = tokens.token_parse(token)
        assert parsed is not None
        lua_calls.append(
            (
                cache.auth_key(parsed.player_id),
                cache.seen_key(hotstate.shard_of(parsed.player_id)),
                cache.unknown_key(parsed.player_id, parsed.digest),
                parsed.digest,
                device,
                parsed.player_id,
            )
        )
    idle, interval = settings.MEMORA_SESSION_IDLE_TIMEOUT, settings.MEMORA_LAST_SEEN_WRITE_INTERVAL

    def check_lua(i: int) -> None:
        key, seen, unknown, digest, device, pid = lua_calls[i]
        client.evalsha(
            check_sha, 3, key, seen, unknown, digest, device, repr(time.time()), idle, interval, pid, IDENTITY
        )

    methods: dict[str, Callable[[int], Any]] = {
        "verify": check,
        "token_auth_plus_device": token_and_device,
        "bare_evalsha": floor,
        "check_lua_only": check_lua,
    }
    hooks: dict[str, Callable[[], None]] = {}
    topology = None
    if servers is not None:
        # The same check on the Cluster, other students (a login ends a student's other session),
        # taking its turn in the same blocks; the app pointed there for the Cluster's blocks only.
        topology = pointer = Topology(servers.url)
        pointer.point(True)
        try:
            cluster_sessions = common.seed_sessions(cluster_pids, processes=1)  # forks would share the client
            cluster_client = hotstate.connection()
            cluster_floor_sha = cluster_client.script_load(FLOOR_LUA)
        finally:
            pointer.point(False)
        cluster_bearer = [(f"Bearer {token}", device) for _, token, device in cluster_sessions]

        def check_cluster(i: int) -> None:
            check(i, cluster_bearer)

        def floor_cluster(i: int) -> None:
            cluster_client.evalsha(cluster_floor_sha, 0)

        methods["verify_cluster"] = check_cluster
        methods["bare_evalsha_cluster"] = floor_cluster
        hooks = {
            "verify": lambda: pointer.point(False),
            "verify_cluster": lambda: pointer.point(True),
        }

    # Warm every path (the Lua script loaded, the connections open), then count, then time.
    n = len(bearer)
    for name, fn in methods.items():
        if name in hooks:
            hooks[name]()
        for i in range(n):
            fn(i)
    counts = {}
    for name, fn in methods.items():
        if name in hooks:
            hooks[name]()
        counts[name] = _count(fn, 2000, n)
    paths.clear()
    common.log(f"verification: timing {args.calls} calls per method on {n} students")
    load_before = common.loadavg()
    samples = _blocks(methods, calls=args.calls, block=args.block, sizes=dict.fromkeys(methods, n), hooks=hooks)
    if topology is not None:
        topology.point(False)
    main_run = {name: common.summary_ms(values) for name, values in samples.items()}
    data: dict[str, Any] = {
        "students": n,
        "calls": args.calls,
        "counts": {k: v for k, v in counts.items() if not k.endswith("_cluster")},
        "timing": {k: v for k, v in main_run.items() if not k.endswith("_cluster")},
        "verify_paths": dict(paths),
        "loadavg": [load_before, common.loadavg()],
    }
    data["ratios"] = _ratios(data["timing"])
    if servers is not None:
        spread: dict[str, int] = {}
        for _, token, _device in cluster_sessions:
            parsed = tokens.token_parse(token)
            assert parsed is not None
            node = cluster_client.get_node_from_key(cache.auth_key(parsed.player_id))
            spread[f"{node.host}:{node.port}"] = spread.get(f"{node.host}:{node.port}", 0) + 1
        # Redis's own time per check (INFO commandstats of the private nodes, reset first): what
        # one master's core can serve, the unit docs/SCALING.md sizes the nodes from.
        pointer.point(True)
        for node in servers.nodes:
            node.client().config_resetstat()
        for i in range(min(n, 5000)):
            check_cluster(i)
        pointer.point(False)
        calls = usec = 0
        for node in servers.nodes:
            stat = node.client().info("commandstats").get("cmdstat_evalsha", {})
            calls += int(stat.get("calls", 0))
            usec += int(stat.get("usec", 0))
        timing = {"verify": main_run["verify_cluster"], "bare_evalsha": main_run["bare_evalsha_cluster"]}
        data["cluster"] = {
            "masters": len(servers.nodes),
            "students": len(cluster_bearer),
            "students_per_node": spread,
            "pids": [node.pid for node in servers.nodes],
            "timing": timing,
            "counts": {"verify": counts["verify_cluster"], "bare_evalsha": counts["bare_evalsha_cluster"]},
            "versus_single": cluster_versus_single(data["timing"], timing),
            "server": {"evalsha_calls": calls, "usec_per_check": usec / calls if calls else None},
        }
        # The big point below is on single Redis only; the Cluster's keys go with its processes.

    if args.big > n:
        extra = args.big - n
        common.log(f"verification: {extra} more students' sessions into Redis (WRITE script, pipelined)")
        generation, template = selectors.cache_snapshot(player_id=pids[0])  # type: ignore[misc]
        template = {k: str(v) for k, v in template.items() if not k.startswith("t:")}
        r = common.redis_client()
        write = r.register_script(cache.write_script.source)
        big: list[tuple[str, str]] = []
        ttl = settings.MEMORA_SESSION_LIFETIME + 86400
        pipe = r.pipeline(transaction=False)
        for j in range(extra):
            pid = 50_000_000 + j
            token = tokens.token_new(pid)
            device = common.device_for(pid)
            fields = {**template, "cur": tokens.digest(token), "sid": str(900_000_000 + j), "dev": device}
            fields["devs"] = device
            write(keys=[cache.auth_key(pid)], args=[generation, ttl, json.dumps(fields), IDENTITY], client=pipe)
            big.append((f"Bearer {token}", device))
            if len(pipe) >= 2000:
                pipe.execute()
        pipe.execute()
        big += bearer
        random.Random(7).shuffle(big)
        paths.clear()

        def check_big(i: int) -> None:
            check(i, big)

        for i in range(0, len(big), 50):  # touch the key space once
            check_big(i)
        paths.clear()
        common.log(f"verification: timing {args.calls} calls on {len(big)} students in Redis")
        big_samples = _blocks(
            {"verify": check_big, "bare_evalsha": floor},
            calls=args.calls,
            block=args.block,
            sizes={"verify": len(big), "bare_evalsha": len(big)},
        )
        data["big"] = {
            "students_in_redis": len(big),
            "timing": {name: common.summary_ms(values) for name, values in big_samples.items()},
            "verify_paths": dict(paths),
            "counts": {"verify": _count(check_big, 2000, len(big))},
        }

    if "big" in data:
        b = data["big"]["timing"]
        data["big"]["ratios"] = {
            "p99_over_evalsha_p99": b["verify"]["p99_ms"] / b["bare_evalsha"]["p99_ms"],
            "p99_big_over_p99_small": b["verify"]["p99_ms"] / data["timing"]["verify"]["p99_ms"],
        }
    return data


if __name__ == "__main__":
    main()
