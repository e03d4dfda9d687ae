"""What an award is, on either path: the request, the outcome, the errors it may answer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from core.errors import ApiError
from wallets import idempotency


@dataclass(frozen=True)
class AwardRequest:
    player_id: int
    kind: str  # "lesson", "service" or "restore" (wallets.rules)
    base_amount: int
    local_day: dt.date
    idem_scope: str
    idem_key: str
    fingerprint: str
    lesson_id: str | None = None
    reason: str | None = None
    rate_limit: tuple[int, int] | None = None
    # (completions per local day, seconds until the local day ends): past it, 429, nothing written.
    daily_limit: tuple[int, float] | None = None
    actor: str = ""

    @property
    def idem_digest(self) -> str:
        return idempotency.key_digest(self.idem_scope, self.idem_key)

    @property
    def fp_digest(self) -> str:
        return idempotency.fingerprint_digest(self.fingerprint)


@dataclass(frozen=True)
class AwardOutcome:
    status: int
    body: dict[str, Any]
    replayed: bool
    path: str


def key_reused() -> ApiError:
    return ApiError("idempotency_key_reused", "This Idempotency-Key was used for a different request.", status=422)


def nothing_to_restore() -> ApiError:
    return ApiError(
        "validation_error",
        "Some fields are invalid.",
        status=400,
        errors={"player": ["This student has no broken streak to restore."]},
    )
