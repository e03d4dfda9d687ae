"""The flush's SQL: the statements it builds from the models' names, and how it reads MariaDB's
errors (what ends a chunk, what refuses one statement)."""

from __future__ import annotations

from typing import Any

from django.db import OperationalError, connection

from wallets.events import LEDGER_COLUMNS
from wallets.models import LedgerEvent, PlayerWallet

# MariaDB's deadlock and lock-wait timeout: the chunk is retried. Any other OperationalError (a
# lost connection) is an outage: the claims are handed back for the next run.
RETRYABLE = frozenset({1205, 1213})
# The wallet columns the upsert does not change on an existing row.
_KEPT_ON_UPDATE = ("player_id", "generation", "created_at")


def insert_sql() -> str:
    """One ledger row (``LedgerRow``'s columns); executemany makes it a multi-row INSERT."""
    q = connection.ops.quote_name
    columns = ", ".join(q(c) for c in LEDGER_COLUMNS)
    marks = ", ".join(["%s"] * len(LEDGER_COLUMNS))
    return f"INSERT INTO {q(LedgerEvent._meta.db_table)} ({columns}) VALUES ({marks})"  # noqa: S608 (names from the model)


def upsert_sql(wallet_fields: tuple[str, ...]) -> str:
    """Wallet rows written whole (``wallet_fields``, the flush's ``WalletRow`` fields, each written
    to its model field's column: a column may keep an older name, see wallets.cache)."""
    q = connection.ops.quote_name
    column_of = {f.attname: f.column for f in PlayerWallet._meta.concrete_fields}
    wallet_columns = tuple(column_of[name] for name in wallet_fields)
    columns = ", ".join(q(c) for c in wallet_columns)
    marks = ", ".join(["%s"] * len(wallet_columns))
    updated = [c for c in wallet_columns if c not in _KEPT_ON_UPDATE]
    if connection.vendor == "mysql":
        assign = ", ".join(f"{q(c)} = VALUES({q(c)})" for c in updated)
        tail = f"ON DUPLICATE KEY UPDATE {assign}"
    else:
        assign = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in updated)
        tail = f"ON CONFLICT (player_id) DO UPDATE SET {assign}"
    table = q(PlayerWallet._meta.db_table)
    return f"INSERT INTO {table} ({columns}) VALUES ({marks}) {tail}"  # noqa: S608 (names from the model)


def one_statement_per_call(cursor: Any) -> None:
    """mysqlclient's executemany cuts a multi-row INSERT at 64 KiB: let one call be one statement."""
    raw: Any = getattr(getattr(cursor, "cursor", None), "cursor", None)
    if connection.vendor == "mysql" and hasattr(raw, "max_stmt_length"):
        raw.max_stmt_length = 8 * 1024 * 1024


def error_code(exc: Exception) -> Any:
    return exc.args[0] if exc.args else None


def is_outage(exc: OperationalError) -> bool:
    """True for what must end the chunk: a lost connection (a client error, 2000 and up), or a
    deadlock or lock-wait timeout (InnoDB rolled the transaction back: the chunk is retried). Any
    other server error refuses only the statement, which is retried event by event."""
    code = error_code(exc)
    return code in RETRYABLE or not (isinstance(code, int) and 1000 <= code < 2000)
