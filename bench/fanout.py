"""Part "fanout": the flush on 1 vs 2 workers on the same events, raw SQL on 1 vs 2 connections,
and the unit costs docs/SCALING.md sizes from (DESIGN v3, "(v3) flush with 2 workers").

Per case ``<students>x<awards>``:

1. Seed the awards through ``wallets.services.wallet_award`` (bench.flush's seeding), live sessions
   for the students of a sample of shards (``devices.services.session_login``), then Redis's
   ``MEMORY USAGE`` of every key of those shards, by kind: the hot state an active student costs.
   The pending lists and dirty sets are kept (``DUMP``) so each flush below starts from the very
   same events.
2. Raw SQL on 1 and on 2 connections: the rows the flush would write (its own decoding, prepared
   untimed), written with multi-row INSERTs of 2,000 ledger rows + one wallet upsert per chunk of
   ``MEMORA_FLUSH_CHUNK`` students, one transaction per chunk; with 2 connections two forked
   processes take alternate chunks and start together. Rate = rows / wall time.
3. The flush on 1 and on 2 workers: ``wallets.fanout.wallet_flush_parallel`` (what
   ``sync_wallets --workers N`` runs) in a fresh child process; with 2 workers it forks two
   processes taking the ranges of shards (``MEMORA_FLUSH_FANOUT``) one after another. Each run is
   checked (every event once, wallets = ledger = seeded XP, nothing left in Redis); the ledger is
   emptied and the events restored between runs.
Rounds alternate the order (1 then 2, then 2 then 1); the report takes medians.

    python -m bench.fanout [--cases 10000x20] [--rounds 2] [--sample-shards 32]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import statistics
import subprocess
import sys
import time
from typing import Any

from bench import common
from bench import flush as bench_flush

# --- the events, kept and restored ----------------------------------------------------------------


def snapshot(pids: list[int]) -> list[tuple[str, bytes]]:
    """DUMP of every pending list and dirty set: the events each flush run starts from."""
    from django.conf import settings

    from wallets import cache

    keys = [cache.pending_key(pid) for pid in pids] + [cache.dirty_key(s) for s in range(settings.MEMORA_REDIS_SHARDS)]
    r = common.redis_client()
    out: list[tuple[str, bytes]] = []
    for i in range(0, len(keys), 5000):
        part = keys[i : i + 5000]
        pipe = r.pipeline(transaction=False)
        for key in part:
            pipe.dump(key)
        out += [(k, v) for k, v in zip(part, pipe.execute(), strict=True) if v is not None]
    return out


def restore(dumps: list[tuple[str, bytes]]) -> None:
    r = common.redis_client()
    for i in range(0, len(dumps), 5000):
        pipe = r.pipeline(transaction=False)
        for key, value in dumps[i : i + 5000]:
            pipe.restore(key, 0, value, replace=True)
        pipe.execute()


# --- Redis memory per active student --------------------------------------------------------------


def _kind(key: str) -> str:
    # mem:{s:N}:<kind>:<id...> -> <kind> (rl:lesson / rl:lessonday keep their second part)
    rest = key.split("}:", 1)[1] if "}:" in key else key
    parts = rest.split(":")
    if parts[0] == "rl" and len(parts) > 1:
        return f"rl:{parts[1]}"
    return parts[0]


def memory_per_student(pids: list[int], shards: list[int]) -> dict[str, Any]:
    """MEMORY USAGE (SAMPLES 0: every element) of every key of the sample shards, by kind, per
    student of those shards; INFO's used_memory beside it."""
    from core import hotstate

    r = common.redis_client()
    keys: list[bytes] = []
    for shard in shards:
        keys += list(r.scan_iter(match=f"{hotstate.shard_prefix(shard)}*", count=5000))
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    by_kind: dict[str, dict[str, int]] = {}
    for key, size in zip(keys, pipe.execute(), strict=True):
        entry = by_kind.setdefault(_kind(key.decode()), {"keys": 0, "bytes": 0})
        entry["keys"] += 1
        entry["bytes"] += int(size or 0)
    students = sum(1 for pid in pids if hotstate.shard_of(pid) in set(shards))
    total = sum(e["bytes"] for e in by_kind.values())
    return {
        "shards": len(shards),
        "students": students,
        "by_kind": by_kind,
        "bytes_per_student": total / students if students else None,
        "used_memory": int(r.info("memory")["used_memory"]),
    }


# --- raw SQL on N connections ---------------------------------------------------------------------


def prepare_chunks(pids: list[int], chunk: int) -> list[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """(ledger rows, wallet upsert rows) per chunk of students, as bench.flush.raw_floor builds them."""
    r = common.redis_client()
    return [bench_flush.chunk_rows(r, pids[start : start + chunk]) for start in range(0, len(pids), chunk)]


def _raw_child(chunks: list[Any], barrier: Any, results: Any) -> None:
    from django.db import connection, connections, transaction

    connections.close_all()
    insert, upsert, _ = bench_flush.sql()
    connection.ensure_connection()
    raw = connection.connection
    barrier.wait()
    t0 = time.time()
    rows = 0
    for ledger, wallets in chunks:
        with transaction.atomic():
            cursor = raw.cursor()
            cursor.max_stmt_length = 16 * 1024 * 1024 - 1024
            for i in range(0, len(ledger), 2000):
                cursor.executemany(insert, ledger[i : i + 2000])
            cursor.executemany(upsert, wallets)
            cursor.close()
        rows += len(ledger)
    results.put((t0, time.time(), rows))


def raw_sql(chunks: list[Any], n: int) -> dict[str, Any]:
    """The chunks written on ``n`` connections (forked processes taking alternate chunks)."""
    from django.db import connections

    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_raw_child, args=(chunks[i::n], barrier, results)) for i in range(n)]
    load = common.loadavg()
    for p in procs:
        p.start()
    got: list[tuple[float, float, int]] = []
    while len(got) < n:
        try:
            got.append(results.get(timeout=1))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                for p in procs:
                    p.kill()
                raise RuntimeError("a raw-SQL writer failed (its traceback is above)") from None
    for p in procs:
        p.join()
    start, end = min(g[0] for g in got), max(g[1] for g in got)
    rows = sum(g[2] for g in got)
    wall = end - start
    return {"connections": n, "rows": rows, "seconds": round(wall, 3), "rows_per_s": rows / wall, "loadavg": load}


# --- the flush on N workers -----------------------------------------------------------------------


def child_flush(workers: int) -> None:
    """Runs in a fresh process: the fanned-out flush on ``workers`` processes."""
    common.setup()
    from django.conf import settings

    from wallets import fanout

    global0 = common.mariadb_status()
    t0 = time.perf_counter()
    summary = fanout.wallet_flush_parallel(workers=workers, trigger="bench")
    seconds = time.perf_counter() - t0
    global1 = common.mariadb_status()
    print(
        "FLUSHJSON "
        + json.dumps(
            {
                "workers": workers,
                "ranges": max(settings.MEMORA_FLUSH_FANOUT, workers),
                "seconds": seconds,
                "students": summary.students,
                "events": summary.events,
                "chunks": summary.chunks,
                "statements_reported": summary.statements,
                "global_counters": common.delta(global1, global0),
            }
        ),
        flush=True,
    )


def run_flush(workers: int) -> dict[str, Any]:
    load = common.loadavg()
    argv = [sys.executable, "-m", "bench.fanout", "--child-flush", str(workers)]
    out = subprocess.run(argv, cwd=common.ROOT, capture_output=True, text=True, timeout=3600, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("FLUSHJSON ")), None)
    if line is None:
        raise RuntimeError(f"flush child failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    result = dict(json.loads(line[len("FLUSHJSON ") :]))
    result["loadavg"] = load
    result["events_per_s"] = result["events"] / result["seconds"]
    return result


def run_case(students: int, awards: int, *, rounds: int, sample_shards: int, chunk: int) -> dict[str, Any]:
    from django.conf import settings

    from core import hotstate

    common.ledger_reset()
    common.redis_cleanup()
    pids = common.ensure_students(students)
    name = f"fanout {students}x{awards}"
    common.log(f"{name}: seeding {students * awards} awards through wallet_award (pipelined)")
    seeded = common.seed_awards(pids, awards)
    step = max(1, settings.MEMORA_REDIS_SHARDS // sample_shards)
    shards = list(range(0, settings.MEMORA_REDIS_SHARDS, step))[:sample_shards]
    in_sample = [pid for pid in pids if hotstate.shard_of(pid) in set(shards)]
    common.seed_sessions(in_sample, processes=1)
    memory = {"pending": memory_per_student(pids, shards)}
    common.log(f"{name}: {memory['pending']['bytes_per_student']:.0f} bytes per student before the flush")
    dumps = snapshot(pids)
    chunks = prepare_chunks(pids, chunk)
    case: dict[str, Any] = {
        "students": students,
        "awards": awards,
        "events": students * awards,
        "seed": seeded,
        "quiet_check": common.other_db_activity(),
        "raw": [],
        "flush": [],
        "checks": [],
    }
    for round_no in range(rounds):
        order = (1, 2) if round_no % 2 == 0 else (2, 1)
        for n in order:
            common.ledger_reset()
            result = raw_sql(chunks, n)
            result["round"] = round_no
            case["raw"].append(result)
            common.log(f"{name}: raw SQL on {n} connection(s): {result['rows_per_s']:.0f} rows/s")
        for n in order:
            common.ledger_reset()
            restore(dumps)
            result = run_flush(n)
            result["round"] = round_no
            check = bench_flush.check_result(pids, seeded)
            result["check_ok"] = check["ok"]
            case["flush"].append(result)
            case["checks"].append(check)
            common.log(f"{name}: flush on {n} worker(s): {result['seconds']:.1f} s ({result['events_per_s']:.0f} ev/s)")
            if not check["ok"]:
                common.log(f"{name}: CHECK FAILED {check}")
    memory["flushed"] = memory_per_student(pids, shards)
    common.log(f"{name}: {memory['flushed']['bytes_per_student']:.0f} bytes per student after the flush")
    case["memory"] = memory

    def median_of(rows: list[dict[str, Any]], n: int, key: str, field: str) -> float:
        return float(statistics.median(r[field] for r in rows if r[key] == n))

    f1 = median_of(case["flush"], 1, "workers", "seconds")
    f2 = median_of(case["flush"], 2, "workers", "seconds")
    r1 = median_of(case["raw"], 1, "connections", "rows_per_s")
    r2 = median_of(case["raw"], 2, "connections", "rows_per_s")
    case["summary"] = {
        "flush_1_s": f1,
        "flush_2_s": f2,
        "flush_speedup": f1 / f2,
        "flush_events_per_s_1": case["events"] / f1,
        "flush_events_per_s_2": case["events"] / f2,
        "raw_rows_per_s_1": r1,
        "raw_rows_per_s_2": r2,
        "raw_speedup": r2 / r1,
        "all_checks_ok": all(c["ok"] for c in case["checks"]),
    }
    common.ledger_reset()
    common.redis_cleanup()
    return case


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="10000x20", help="students x awards, comma separated (default 10000x20)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of 1 and 2 (order alternating; default 2)")
    parser.add_argument("--sample-shards", type=int, default=32, help="shards whose keys MEMORY USAGE measures")
    parser.add_argument("--child-flush", type=int, metavar="WORKERS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_flush:
        child_flush(args.child_flush)
        return {}
    started = time.time()
    common.setup()
    common.ensure_database()
    from django.conf import settings

    cases = [
        run_case(s, a, rounds=args.rounds, sample_shards=args.sample_shards, chunk=settings.MEMORA_FLUSH_CHUNK)
        for s, a in bench_flush.parse_cases(args.cases)
    ]
    data = {
        "chunk": settings.MEMORA_FLUSH_CHUNK,
        "fanout": settings.MEMORA_FLUSH_FANOUT,
        "shards": settings.MEMORA_REDIS_SHARDS,
        "cases": cases,
    }
    common.save("fanout", argv if argv is not None else sys.argv[1:], data, started)
    return data


if __name__ == "__main__":
    main()
