# ruff: noqa: S608  (table and column names come from the models, values are parameters)
"""Part 4 (and the flush half of part 5): the wallet flush against its floor and its baseline.

Per case ``<students>x<awards>``:

1. Seed (``bench.common.seed_awards``, shared with bench.fanout): every student's wallet hash
   through ``wallets.cache.rebuild`` (what a rebuild of a fresh wallet writes), then the awards
   through ``wallets.services.wallet_award`` itself, with ``hotstate.call`` pointed at a Redis
   pipeline: the award path builds its arguments and runs its own Lua script, so the pending
   events are exactly what it produces; only the round trips are batched.
2. The floor (``--raw``): the same events read from Redis (not timed) and written with raw SQL: a
   multi-row INSERT of the ledger rows (2,000 rows a statement, as the flush batches) and one
   ``INSERT ... ON DUPLICATE KEY UPDATE`` of the chunk's wallets, one transaction per 500 students.
   Then the ledger is emptied again.
3. The flush: ``wallets.flush.wallet_flush()`` in a fresh child process (its peak RSS is the
   flush's), with MariaDB's counters read around it: the child connection's own ``SHOW SESSION
   STATUS`` (exact: Com_*, Handler_*) and ``SHOW GLOBAL STATUS`` (Innodb_rows_*: global, so other
   load on the server counts too; the report shows how busy the server was without us). Then the
   result is checked: every event in the ledger once, every wallet at its total.
4. The write-every-award baseline (``--sample``): one transaction per award (INSERT the ledger row,
   UPDATE the wallet) for the first N students' events, scaled to the case.

    python -m bench.flush [--cases 50000x20,50000x1] [--sample 2000] [--no-raw] [--profile DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import subprocess
import sys
import time
from typing import Any

from bench import common


def read_events(r: Any, pids: list[int]) -> dict[int, list[dict[str, Any]]]:
    from wallets import cache

    pipe = r.pipeline(transaction=False)
    for pid in pids:
        pipe.lrange(cache.pending_key(pid), 0, -1)
    return {pid: [json.loads(raw) for raw in raws] for pid, raws in zip(pids, pipe.execute(), strict=True)}


def ledger_rows(pid: int, events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The parameters of the rows the flush writes for these events: its own decoding
    (``wallets.events.decode``), so the floor writes exactly the flush's rows (not timed)."""
    from django.db import connection

    from wallets.events import decode

    native = bool(connection.features.has_native_uuid_field)
    return [decode(pid, json.dumps(e), native_uuid=native).row for e in events]


WALLET_FROM_EVENT = {
    # wallet column: event column, the fields the flush sets from the newest event
    "current_streak": "streak_after",
    "longest_streak": "longest_after",
    "last_activity_date": "last_day_after",
    "streak_freezes": "freezes_after",
    "streak_before_break": "break_after",
    "version": "version",
}


def _wallet_columns() -> dict[str, str]:
    from wallets.models import LedgerEvent, PlayerWallet

    wallet = {f.column for f in PlayerWallet._meta.concrete_fields}
    ledger = {f.column for f in LedgerEvent._meta.concrete_fields}
    return {w: e for w, e in WALLET_FROM_EVENT.items() if w in wallet and e in ledger}


def sql() -> tuple[str, str, str]:
    from wallets.events import LEDGER_COLUMNS
    from wallets.models import LedgerEvent, PlayerWallet

    ledger = LedgerEvent._meta.db_table
    wallets = PlayerWallet._meta.db_table
    columns = list(LEDGER_COLUMNS)  # the order of PendingEvent.row
    insert = f"INSERT INTO {ledger} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    cols = list(_wallet_columns())
    names = ["player_id", "xp_total", *cols, "created_at", "updated_at"]
    # The other columns of a new row (never taken here: every student has a wallet row) at their defaults.
    others = [f for f in PlayerWallet._meta.concrete_fields if f.column not in names]
    names += [f.column for f in others]
    sets = ["xp_total = xp_total + VALUES(xp_total)"]
    for c in cols:
        sets.append(f"{c} = GREATEST({c}, VALUES({c}))" if c == "longest_streak" else f"{c} = VALUES({c})")
    sets.append("updated_at = VALUES(updated_at)")
    upsert = (
        f"INSERT INTO {wallets} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) "
        f"ON DUPLICATE KEY UPDATE {', '.join(sets)}"
    )
    usets = ["xp_total = xp_total + %s"]
    usets += [f"{c} = GREATEST({c}, %s)" if c == "longest_streak" else f"{c} = %s" for c in cols]
    update = f"UPDATE {wallets} SET {', '.join(usets)}, updated_at = %s WHERE player_id = %s"
    return insert, upsert, update


def wallet_defaults() -> list[Any]:
    """Values of a new wallet row's remaining columns (never used: every student has a wallet row)."""
    from wallets.models import PlayerWallet

    named = {"player_id", "xp_total", "created_at", "updated_at", *_wallet_columns()}
    return [f.get_default() for f in PlayerWallet._meta.concrete_fields if f.column not in named]


def wallet_values(e: dict[str, Any]) -> list[Any]:
    """The wallet columns set from one event (the newest of a student's)."""
    import datetime as dt

    values = []
    for event_col in _wallet_columns().values():
        value = e.get(event_col)
        if event_col == "last_day_after":
            value = dt.date.fromisoformat(value) if value else None
        values.append(int(value or 0) if event_col != "last_day_after" else value)
    return values


def chunk_rows(r: Any, part: list[int]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """One chunk's ledger rows (the flush's own decoding) and wallet upsert rows, for the raw-SQL
    floor (bench.flush, bench.fanout): prepared untimed."""
    events = read_events(r, part)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [row for pid in part for row in ledger_rows(pid, events[pid])]
    wallets = []
    for pid in part:
        if not events[pid]:
            continue
        newest = max(events[pid], key=lambda e: int(e["version"]))
        total = sum(int(e["amount"]) for e in events[pid])
        wallets.append((pid, total, *wallet_values(newest), now, now, *wallet_defaults()))
    return rows, wallets


def raw_floor(pids: list[int], chunk: int) -> dict[str, Any]:
    """The same rows written by raw SQL, one transaction per chunk; only the SQL is timed."""
    from django.db import connection, transaction

    insert, upsert, _ = sql()
    r = common.redis_client()
    connection.ensure_connection()
    raw = connection.connection
    session0, global0 = common.mariadb_status("SESSION"), common.mariadb_status()
    sql_seconds = 0.0
    rows_written = 0
    t_wall = time.perf_counter()
    for start in range(0, len(pids), chunk):
        part = pids[start : start + chunk]
        rows, wallets = chunk_rows(r, part)
        t0 = time.perf_counter()
        with transaction.atomic():
            cursor = raw.cursor()
            # mysqlclient splits a multi-row INSERT at 64 KiB by default: 2,000 rows a statement, as the flush.
            cursor.max_stmt_length = 16 * 1024 * 1024 - 1024
            for i in range(0, len(rows), 2000):
                cursor.executemany(insert, rows[i : i + 2000])
            cursor.executemany(upsert, wallets)
            cursor.close()
        sql_seconds += time.perf_counter() - t0
        rows_written += len(rows)
    wall = time.perf_counter() - t_wall
    session1, global1 = common.mariadb_status("SESSION"), common.mariadb_status()
    return {
        "sql_seconds": round(sql_seconds, 2),
        "wall_seconds_with_redis_read": round(wall, 2),
        "ledger_rows": rows_written,
        "session_counters": common.delta(session1, session0),
        "global_counters": common.delta(global1, global0),
    }


def write_every_award(events: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """One transaction per award, in arrival order: INSERT the ledger row, UPDATE the wallet."""
    from django.db import connection, transaction

    insert, _, update = sql()
    connection.ensure_connection()
    raw = connection.connection
    ordered = sorted(
        ((pid, e) for pid, es in events.items() for e in es), key=lambda pe: (float(pe[1]["accepted_at"]), pe[0])
    )
    prepared = [(pid, ledger_rows(pid, [e])[0], [int(e["amount"]), *wallet_values(e)]) for pid, e in ordered]
    session0, global0 = common.mariadb_status("SESSION"), common.mariadb_status()
    t0 = time.perf_counter()
    for pid, row, wallet in prepared:
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with transaction.atomic():
            cursor = raw.cursor()
            cursor.execute(insert, row)
            cursor.execute(update, (*wallet, now, pid))
            cursor.close()
    seconds = time.perf_counter() - t0
    session1, global1 = common.mariadb_status("SESSION"), common.mariadb_status()
    return {
        "awards": len(ordered),
        "students": len(events),
        "seconds": round(seconds, 2),
        "awards_per_s": len(ordered) / seconds,
        "session_counters": common.delta(session1, session0),
        "global_counters": common.delta(global1, global0),
    }


def _vm_kib(name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def child_flush() -> None:
    """Runs in a fresh process: the flush alone, its counters and its peak memory."""
    common.setup()
    from django.db import connection

    from wallets.flush import wallet_flush

    connection.ensure_connection()
    rss0 = _vm_kib("VmRSS")
    # ru_maxrss would carry the parent's size across fork + exec; the kernel's per-process high
    # water mark, reset here, is the flush's own peak.
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    session0, global0 = common.mariadb_status("SESSION"), common.mariadb_status()
    t0 = time.perf_counter()
    summary = wallet_flush(trigger="bench")
    seconds = time.perf_counter() - t0
    session1, global1 = common.mariadb_status("SESSION"), common.mariadb_status()
    rss1 = _vm_kib("VmHWM")
    print(
        "FLUSHJSON "
        + json.dumps(
            {
                "seconds": seconds,
                "students": summary.students,
                "events": summary.events,
                "statements_reported": summary.statements,
                "chunks": summary.chunks,
                "dead_lettered": summary.dead_lettered,
                "duplicates": summary.duplicates,
                "rss_before_mib": rss0 / 1024,
                "peak_rss_mib": rss1 / 1024,
                "session_counters": common.delta(session1, session0),
                "global_counters": common.delta(global1, global0),
            }
        ),
        flush=True,
    )


def run_flush_child(profile_path: str | None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.flush", "--child-flush"]
    if profile_path:
        spy = str(common.ROOT / ".venv" / "bin" / "py-spy")
        # --idle: the time waiting on MariaDB and Redis shows too (the flush's SQL against its own work).
        argv = [spy, "record", "--idle", "--rate", "100", "--format", "raw", "-o", profile_path, "--", *argv]
    out = subprocess.run(argv, cwd=common.ROOT, capture_output=True, text=True, timeout=3600)
    line = next((x for x in out.stdout.splitlines() if x.startswith("FLUSHJSON ")), None)
    if line is None:
        raise RuntimeError(f"flush child failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return dict(json.loads(line[len("FLUSHJSON ") :]))


def check_result(pids: list[int], seeded: dict[str, Any]) -> dict[str, Any]:
    from django.db.models import Count, Sum

    from wallets import cache
    from wallets.models import LedgerEvent, PlayerWallet

    ledger = LedgerEvent.objects.aggregate(n=Count("id"), xp=Sum("amount"), ids=Count("event_id", distinct=True))
    wallets = PlayerWallet.objects.filter(player_id__in=pids).aggregate(xp=Sum("xp_total"))
    r = common.redis_client()
    pipe = r.pipeline(transaction=False)
    for pid in pids[:: max(1, len(pids) // 1000)]:
        pipe.llen(cache.pending_key(pid))
        pipe.exists(cache.inflight_key(pid))
    left = sum(int(x) for x in pipe.execute())
    ok = ledger["n"] == seeded["events"] == ledger["ids"] and wallets["xp"] == seeded["xp"] == ledger["xp"] and not left
    return {
        "ledger_rows": ledger["n"],
        "distinct_events": ledger["ids"],
        "ledger_xp": ledger["xp"],
        "wallets_xp": wallets["xp"],
        "seeded_xp": seeded["xp"],
        "left_in_redis_sampled": left,
        "ok": ok,
    }


def run_case(
    students: int, awards: int, *, raw: bool, sample: int, chunk: int, profile_dir: str | None
) -> dict[str, Any]:
    common.ledger_reset()
    common.redis_cleanup()
    pids = common.ensure_students(students)
    common.log(f"flush {students}x{awards}: seeding {students * awards} awards through wallet_award (pipelined)")
    seeded = common.seed_awards(pids, awards)
    common.log(f"flush {students}x{awards}: seeded in {seeded['seconds']} s")
    case: dict[str, Any] = {"students": students, "awards": awards, "events": students * awards, "seed": seeded}
    sample_events = read_events(common.redis_client(), pids[:sample]) if sample else {}
    if raw:
        case["raw"] = raw_floor(pids, chunk)
        common.log(f"flush {students}x{awards}: raw SQL {case['raw']['sql_seconds']} s")
        common.ledger_reset()
    case["quiet_check"] = common.other_db_activity()
    case["loadavg_before"] = common.loadavg()
    profile = f"{profile_dir}/flush-{students}x{awards}.folded.txt" if profile_dir else None
    case["flush"] = run_flush_child(profile)
    common.log(f"flush {students}x{awards}: wallet_flush {case['flush']['seconds']:.1f} s")
    case["check"] = check_result(pids, seeded)
    if not case["check"]["ok"]:
        common.log(f"flush {students}x{awards}: CHECK FAILED {case['check']}")
    if sample_events:
        common.ledger_reset()
        case["every_award"] = write_every_award(sample_events)
        scale = case["events"] / case["every_award"]["awards"]
        case["every_award"]["scale"] = scale
        case["every_award"]["scaled_seconds"] = case["every_award"]["seconds"] * scale
        common.log(f"flush {students}x{awards}: write-every-award {case['every_award']['awards_per_s']:.0f}/s")
        common.ledger_reset()
    common.redis_cleanup()
    return case


def parse_cases(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        s, a = item.lower().split("x")
        out.append((int(s), int(a)))
    return out


def main(argv: list[str] | None = None, *, part: str = "flush", defaults: str = "50000x20,50000x1") -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=defaults, help=f"students x awards, comma separated (default {defaults})")
    parser.add_argument(
        "--sample", type=int, default=2000 if part == "flush" else 0, help="write-every-award sample students (0: skip)"
    )
    parser.add_argument("--no-raw", action="store_true", default=part != "flush", help="skip the raw-SQL floor")
    parser.add_argument("--profile", metavar="DIR", help="record the flush with py-spy into DIR")
    parser.add_argument("--child-flush", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_flush:
        child_flush()
        return {}
    started = time.time()
    common.setup()
    common.ensure_database()
    from django.conf import settings

    cases = []
    for students, awards in parse_cases(args.cases):
        cases.append(
            run_case(
                students,
                awards,
                raw=not args.no_raw,
                sample=min(args.sample, students),
                chunk=settings.MEMORA_FLUSH_CHUNK,
                profile_dir=args.profile,
            )
        )
    data = {"chunk": settings.MEMORA_FLUSH_CHUNK, "cases": cases}
    common.save(part, argv if argv is not None else sys.argv[1:], data, started)
    return data


if __name__ == "__main__":
    main()
