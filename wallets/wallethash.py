"""The Redis wallet hash ``w:<id>`` as a typed value, and the one map of the wallet's stored names
(Redis fields, columns, pending-event keys) to the names Python uses."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from wallets import rules

# The one map of the wallet's stored names. Python name (WalletHash, rules.Streak, PlayerWallet)
# -> Redis hash field / PlayerWallet column / pending-event JSON key and ledger column. The stored
# names are in production Redis, databases and queued events: they stay; Python uses its own.
#   xp               xp     xp_total              xp_total_after
#   streak.current   streak current_streak        streak_after
#   streak.longest   longest longest_streak       longest_after
#   streak.last_day  last (ordinal), lastd (ISO)  last_activity_date  last_day_after
#   streak.freezes   freezes streak_freezes       freezes_after
#   streak.streak_lost  brk  streak_before_break  break_after  (the streak lost at the last break)
#   version          ver    version               version
#   generation       gen    generation            gen / generation
#   day              day    (the open day: the day of xp_day and of the lessons set wl:<id>)
#   xp_day           xpd    (lesson XP of the open day)  xp_day_after
WALLET_HASH_FIELDS = ("xp", "streak", "longest", "last", "lastd", "freezes", "ver", "day", "xpd", "gen", "brk")


@dataclass(frozen=True)
class WalletHash:
    """The Redis wallet hash ``w:<id>``, typed (the award script reads and writes the same fields)."""

    xp: int
    streak: rules.Streak
    version: int
    day: dt.date | None  # the open day (the last activity day, or the day of the rebuild)
    xp_day: int
    generation: int = 0

    @classmethod
    def from_fields(cls, f: Mapping[str, str]) -> WalletHash:
        last = f.get("last")
        day = f.get("day")
        streak = rules.Streak(
            int(f.get("streak") or 0),
            int(f.get("longest") or 0),
            dt.date.fromordinal(int(last)) if last else None,
            int(f.get("freezes") or 0),
            int(f.get("brk") or 0),
        )
        return cls(
            xp=int(f.get("xp") or 0),
            streak=streak,
            version=int(f.get("ver") or 0),
            day=dt.date.fromisoformat(day) if day else None,
            xp_day=int(f.get("xpd") or 0),
            generation=int(f.get("gen") or 0),
        )

    def fields(self) -> dict[str, str]:
        """Every field but ``gen`` (the rebuild script sets it beside the identity stamp)."""
        s = self.streak
        return {
            "xp": str(self.xp),
            "streak": str(s.current),
            "longest": str(s.longest),
            "last": str(s.last_day.toordinal()) if s.last_day else "",
            "lastd": s.last_day.isoformat() if s.last_day else "",
            "freezes": str(s.freezes),
            "brk": str(s.streak_lost),
            "ver": str(self.version),
            "day": self.day.isoformat() if self.day else "",
            "xpd": str(self.xp_day),
        }

    def xp_on(self, today: dt.date) -> int:
        """The lesson XP shown for ``today``."""
        return self.xp_day if self.day == today else 0
