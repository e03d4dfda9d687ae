# ruff: noqa: S608  (table and column names are this file's constants)
"""What each narrowing of the ledger is worth: the same rows in a series of layouts, each adding
one change to the one before, from the first digest layout (wallets 0005) to the narrow one (0006).

The rows are those bench.ledger_size writes (``--students`` x ``--events``, round robin, through
``PendingEvent.row``), kept in the ledger; each variant is a fresh table in the benchmarks'
database filled with ``INSERT … SELECT … ORDER BY id`` (the same arrival order), then ANALYZE;
bytes per event = (data + indexes) / rows from information_schema, as bench.ledger_size.

    DJANGO_SETTINGS_MODULE=bench.settings python -m bench.ledger_variants [--students 20000 --events 20]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bench import common, ledger_size

_KIND_NAME = "ELT(kind, 'lesson', 'service', 'freeze_earned', 'freeze_used', 'streak_restored')"  # codes 1..5

# (name, columns of the CREATE TABLE, indexes, SELECT list in column order)
_BASE_COLUMNS: list[tuple[str, str, str]] = [
    # column, type, expression from the narrow ledger
    ("event_id", "uuid NOT NULL", "event_id"),
    ("player_id", "bigint NOT NULL", "player_id"),
    ("kind", "varchar(16) NOT NULL", _KIND_NAME),
    ("amount", "int NOT NULL", "amount"),
    ("lesson_id", "varchar(64) CHARACTER SET ascii COLLATE ascii_bin NULL", "lesson_id"),
    ("reason", "varchar(200) NULL", "reason"),
    ("accepted_at", "datetime(6) NOT NULL", "accepted_at"),
    ("local_day", "date NOT NULL", "local_day"),
    ("idem_digest", "binary(16) NULL", "idem_digest"),
    ("fp_digest", "binary(16) NULL", "CONCAT(fp_digest, fp_digest)"),
    ("generation", "bigint NOT NULL", "generation"),
    ("version", "bigint NOT NULL", "version"),
    ("xp_total_after", "bigint NOT NULL", "xp_total_after"),
    ("xp_day_after", "int NOT NULL", "xp_day_after"),
    ("capped", "tinyint(1) NOT NULL", "capped"),
    ("streak_after", "int NOT NULL", "streak_after"),
    ("longest_after", "int NOT NULL", "longest_after"),
    ("last_day_after", "date NULL", "last_day_after"),
    ("freezes_after", "int NOT NULL", "freezes_after"),
    ("break_after", "int NOT NULL", "break_after"),
    ("streak_before", "int NULL", "streak_before"),
    ("actor", "varchar(160) NOT NULL", "COALESCE(actor, '')"),
    ("source", "varchar(8) NOT NULL", "'redis'"),
    ("flushed_at", "datetime(6) NOT NULL", "NOW(6)"),
]
_BASE_INDEXES = [
    "UNIQUE KEY event_id (event_id)",
    "KEY ledger_player_accepted (player_id, accepted_at, event_id)",
    "KEY ledger_player_day (player_id, local_day, kind)",
    "KEY ledger_idem_digest (idem_digest)",
]


def _variants() -> list[tuple[str, list[tuple[str, str, str]], list[str]]]:
    cols = list(_BASE_COLUMNS)
    idx = list(_BASE_INDEXES)
    out = [("0005 layout (digests)", list(cols), list(idx))]

    def swap(name: str, new: tuple[str, str, str]) -> None:
        cols[[c[0] for c in cols].index(name)] = new

    cols = [c for c in cols if c[0] not in ("source", "flushed_at")]
    out.append(("- source, flushed_at", list(cols), list(idx)))
    swap("kind", ("kind", "tinyint unsigned NOT NULL", "kind"))
    out.append(("+ kind as TINYINT", list(cols), list(idx)))
    swap("generation", ("generation", "int NOT NULL", "generation"))
    swap("version", ("version", "int NOT NULL", "version"))
    out.append(("+ INT generation, version", list(cols), list(idx)))
    swap("fp_digest", ("fp_digest", "binary(8) NULL", "fp_digest"))
    out.append(("+ 64-bit fingerprint digest", list(cols), list(idx)))
    swap("actor", ("actor", "varchar(160) NULL", "actor"))
    out.append(("+ actor NULL for none", list(cols), list(idx)))
    idx[2] = "KEY ledger_player_day (player_id, local_day)"
    out.append(("+ day's index without kind", list(cols), list(idx)))
    idx = [
        "UNIQUE KEY ledger_player_accepted (player_id, accepted_at, event_id)",
        "KEY ledger_player_day (player_id, local_day)",
        "KEY ledger_idem_digest (idem_digest)",
    ]
    out.append(("+ no event-id index (the history index, unique, finds an id)", list(cols), list(idx)))
    idx.pop(2)
    out.append(("+ no key-digest index (the history index, TTL range) = 0006", list(cols), list(idx)))
    alt = [idx[0], "KEY ledger_idem_digest (idem_digest)"]
    out.append(("(not taken) the day's index instead of the digest's", list(cols), alt))
    swap("xp_total_after", ("xp_total_after", "int NOT NULL", "xp_total_after"))
    out.append(("(not taken) + INT xp_total_after", list(cols), list(idx)))
    return out


def _measure(cursor: Any, table: str, rows: int) -> dict[str, Any]:
    cursor.execute(f"ANALYZE TABLE {table}")
    cursor.fetchall()
    cursor.execute(
        "SELECT data_length, index_length FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_name = %s",
        [table],
    )
    data, index = cursor.fetchone()
    cursor.execute(
        "SELECT index_name, stat_value * @@innodb_page_size FROM mysql.innodb_index_stats "
        "WHERE database_name = DATABASE() AND table_name = %s AND stat_name = 'size'",
        [table],
    )
    per_index = {name: round(int(size) / rows, 1) for name, size in cursor.fetchall()}
    return {"bytes_per_event": round((int(data) + int(index)) / rows, 1), "per_index": per_index}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    ledger_size.main(["--students", str(args.students), "--events", str(args.events), "--keep"])
    from django.db import connection

    from wallets.models import LedgerEvent

    source = LedgerEvent._meta.db_table
    results = []
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {source}")
        (rows,) = cursor.fetchone()
        for n, (name, cols, idx) in enumerate(_variants()):
            table = f"bench_ledger_variant_{n}"
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
            body = ", ".join(["id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY", *(f"{c} {t}" for c, t, _ in cols), *idx])
            cursor.execute(f"CREATE TABLE {table} ({body}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
            names = ", ".join(c for c, _, _ in cols)
            exprs = ", ".join(e for _, _, e in cols)
            cursor.execute(f"INSERT INTO {table} ({names}) SELECT {exprs} FROM {source} ORDER BY id")
            result = {"variant": name, **_measure(cursor, table, rows)}
            cursor.execute(f"DROP TABLE {table}")
            common.log(f"ledger variant: {json.dumps(result)}")
            results.append(result)
        cursor.execute(f"TRUNCATE TABLE {source}")
    return results


if __name__ == "__main__":
    main()
