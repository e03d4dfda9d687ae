"""The ledger's size per event: data + indexes from information_schema after ANALYZE (no OPTIMIZE).

Rows as the flush writes them (``wallets.events.PendingEvent.row``, the same columns and values),
for ``--students`` students x ``--events`` events each, inserted in the order awards arrive (round
robin over the students, as the flush writes one chunk after another), into the benchmarks' own
database; the table is emptied first and after (``--keep``: left filled).

    DJANGO_SETTINGS_MODULE=bench.settings python -m bench.ledger_size [--students 50000 --events 20]

Writes var/bench/ledger_size.json (not with ``--keep``), which the report's targets table reads.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import time
from typing import Any

from bench import common


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="leave the rows in the ledger (bench.ledger_variants)")
    argv = argv if argv is not None else sys.argv[1:]
    args = parser.parse_args(argv)
    started = time.time()
    common.setup()
    common.ensure_database()
    from django.db import connection

    from wallets.events import LEDGER_COLUMNS, PendingEvent
    from wallets.models import LedgerEvent

    pids = common.ensure_students(args.students)
    table = LedgerEvent._meta.db_table
    rng = random.Random(7)
    columns = ", ".join(connection.ops.quote_name(c) for c in LEDGER_COLUMNS)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(LEDGER_COLUMNS))})"  # noqa: S608
    day = dt.date(2026, 11, 30)
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        # TRUNCATE, not DELETE: a fresh tablespace in the current layout (a migrated table's rows
        # would otherwise land among pages of deleted ones, beside columns dropped in place).
        cursor.execute(f"TRUNCATE TABLE {table}")
        raw: Any = cursor.cursor.cursor  # type: ignore[attr-defined]
        raw.max_stmt_length = 8 * 1024 * 1024
        batch: list[tuple[Any, ...]] = []
        at = time.time() - 86400
        for n in range(args.events):
            for pid in pids:
                at += 0.0001
                event = PendingEvent.from_redis(pid, json.dumps(common.pending_event(pid, n, day, at, rng)))
                batch.append(event.row(native_uuid=True))
                if len(batch) >= 2000:
                    cursor.executemany(sql, batch)
                    batch.clear()
        if batch:
            cursor.executemany(sql, batch)
        insert_seconds = time.perf_counter() - t0
        cursor.execute(f"ANALYZE TABLE {table}")
        cursor.fetchall()
        cursor.execute(
            "SELECT table_rows, data_length, index_length FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = %s",
            [table],
        )
        _rows_estimate, data, index = cursor.fetchone()
        cursor.execute(f"SELECT COUNT(*) FROM {table}")  # noqa: S608
        (rows,) = cursor.fetchone()
        cursor.execute(
            "SELECT index_name, stat_value * @@innodb_page_size FROM mysql.innodb_index_stats "
            "WHERE database_name = DATABASE() AND table_name = %s AND stat_name = 'size'",
            [table],
        )
        per_index = {name: int(size) for name, size in cursor.fetchall()}
        if not args.keep:
            cursor.execute(f"TRUNCATE TABLE {table}")
    result = {
        "rows": rows,
        "data_bytes": int(data),
        "index_bytes": int(index),
        "bytes_per_event": round((int(data) + int(index)) / rows, 1),
        "per_index_bytes_per_event": {k: round(v / rows, 1) for k, v in per_index.items()},
        "insert_seconds": round(insert_seconds, 1),
    }
    common.log(f"ledger size: {json.dumps(result)}")
    if not args.keep:
        common.save("ledger_size", argv, result, started)
    return result


if __name__ == "__main__":
    main()
