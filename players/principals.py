"""Who a verified request comes from. The device + session check (in ``devices``) builds these;
any app reads them from ``request.user`` without importing ``devices``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from players import timezones


@dataclass(frozen=True)
class PlayerPrincipal:
    player_id: int
    user_id: int
    device_id: str
    session_id: int
    token_digest: str
    started_at: dt.datetime
    expires_at: dt.datetime
    last_seen_at: dt.datetime
    device_name: str = ""
    platform: str = ""
    timezone: str = "UTC"
    timezone_pending: str = ""
    timezone_effective_at: dt.datetime | None = None
    # Which path verified it: "cache" or "database".
    path: str = "cache"

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False

    @property
    def pk(self) -> int:
        return self.player_id

    def effective_timezone(self, at: dt.datetime) -> str:
        return timezones.student_zone(self, at)


@dataclass(frozen=True)
class ServicePrincipal:
    key_id: int
    name: str
    scopes: frozenset[str] = field(default_factory=frozenset)

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False

    @property
    def pk(self) -> int:
        return self.key_id
