"""What the flush carries: its summary, and a wallet row as it reads and writes it, by name."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from wallets.events import LedgerRow, sql_datetime


@dataclass
class FlushSummary:
    students: int = 0
    events: int = 0
    # Events already in the ledger (a rollback or a stalled flusher handed them out again).
    already_written: int = 0
    # Events whose request was already counted (its key digest is in the ledger).
    duplicates: int = 0
    dead_lettered: int = 0
    # Events of students deleted while they waited.
    dropped_deleted: int = 0
    statements: int = 0
    chunks: int = 0
    redis_unavailable: bool = False
    # Students whose Redis wallet must be rebuilt once their claims are released.
    rebuild_players: list[int] = field(default_factory=list)


@dataclass
class WalletRow:
    """A wallet row as the flush reads and writes it, by name (never by tuple position)."""

    player_id: int
    xp_total: int
    current_streak: int
    longest_streak: int
    last_activity_date: dt.date | None
    streak_freezes: int
    streak_lost: int
    version: int
    applied_generation: int
    generation: int
    created_at: Any
    updated_at: Any

    @property
    def mark(self) -> tuple[int, int]:
        return self.applied_generation, self.version

    def apply(self, inserted: list[LedgerRow], now: dt.datetime) -> None:
        """The rows just inserted (one student's): the total grows by their amounts; the streak
        is the newest row's, when it is newer than the wallet's."""
        self.xp_total += sum(row.amount for row in inserted)
        newest = max(inserted, key=lambda row: (row.generation, row.version))
        order = (newest.generation, newest.version)
        # Only an event newer than the row's: a database-path day is never overwritten by an
        # older Redis version.
        if order > self.mark:
            longest = max(newest.longest_after, self.longest_streak)
            self.current_streak = min(newest.streak_after, longest)
            self.longest_streak = longest
            last = newest.last_day_after
            self.last_activity_date = dt.date.fromisoformat(last) if last else None
            self.streak_freezes = newest.freezes_after
            self.streak_lost = newest.break_after  # the ledger column keeps its stored name
            self.applied_generation, self.version = order
        self.updated_at = now

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(cls.__dataclass_fields__)

    def values(self) -> tuple[Any, ...]:
        """The row's values in :meth:`columns` order, as the database driver takes them."""
        return tuple(_sql_value(getattr(self, name)) for name in self.columns())


def _sql_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return sql_datetime(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
