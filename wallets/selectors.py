"""Reads of the rewards half: the history across flushed, pending and in-flight events; the open
dead letters."""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import Q
from django.utils import timezone

from core import hotstate
from core.errors import validation_error
from wallets import cache
from wallets.events import counted_event
from wallets.models import DeadLetter, LedgerEvent

MAX_PAGE = 100
DEFAULT_PAGE = 50
CURSOR_MAX_LENGTH = 200
_CURSOR_RE = re.compile(rf"[A-Za-z0-9_-]{{1,{CURSOR_MAX_LENGTH}}}")
# Events looked up by id per statement (each one a short range of the history index).
_WRITTEN_BATCH = 1000
# An event's time as its writer stored it may differ from a later decoding's by rounding.
_WRITTEN_SLACK = dt.timedelta(seconds=1)


def ledger_events_written(events: list[tuple[int, uuid.UUID, dt.datetime]]) -> set[uuid.UUID]:
    """Which of these (student, event id, accepted time) are in the ledger. The ledger has no index
    on the event id alone: every reader holds the event, so the history index (student, accepted
    time, event id) finds it in a range of two seconds of one student's rows."""
    found: set[uuid.UUID] = set()
    for i in range(0, len(events), _WRITTEN_BATCH):
        part = events[i : i + _WRITTEN_BATCH]
        match = Q(
            *(
                Q(player_id=pid, accepted_at__range=(at - _WRITTEN_SLACK, at + _WRITTEN_SLACK), event_id=event_id)
                for pid, event_id, at in part
            ),
            _connector=Q.OR,
        )
        found |= set(LedgerEvent.objects.filter(match).values_list("event_id", flat=True))
    return found


@dataclass(frozen=True)
class Cursor:
    accepted_at: dt.datetime
    event_id: uuid.UUID

    def encode(self) -> str:
        raw = f"{self.accepted_at.isoformat()}|{self.event_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        # Whatever a client crafts answers 400: only the alphabet we write, a UTC time in the range
        # the database stores, and a UUID.
        try:
            if not _CURSOR_RE.fullmatch(value):
                raise ValueError("alphabet")
            padded = value + "=" * (-len(value) % 4)
            accepted, _, event_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
            at = dt.datetime.fromisoformat(accepted)
            if at.tzinfo is None:
                raise ValueError("naive")
            at = at.astimezone(dt.UTC)
            if not 1970 <= at.year <= 9998:
                raise ValueError("out of range")
            return cls(at, uuid.UUID(event_id))
        except (ValueError, UnicodeDecodeError, OverflowError) as exc:
            raise validation_error({"cursor": ["Invalid cursor."]}) from exc


def _entry(
    *,
    event_id: str,
    kind: str,
    lesson_id: str | None,
    amount: int,
    reason: str | None,
    local_day: str,
    accepted_at: dt.datetime,
    flushed: bool,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "kind": kind,
        "lesson_id": lesson_id or None,
        "amount": amount,
        "reason": reason or None,
        "local_day": local_day,
        "accepted_at": accepted_at,
        "flushed": flushed,
    }


def wallet_history(*, player_id: int, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first on (accepted_at, event_id); flushed and unflushed alike."""
    after = Cursor.decode(cursor) if cursor else None
    limit = max(1, min(limit, MAX_PAGE))
    rows = LedgerEvent.objects.filter(player_id=player_id)
    if after is not None:
        rows = rows.filter(
            Q(accepted_at__lt=after.accepted_at) | Q(accepted_at=after.accepted_at, event_id__lt=after.event_id)
        )
    flushed = [
        _entry(
            event_id=str(r.event_id),
            kind=r.kind,
            lesson_id=r.lesson_id,
            amount=r.amount,
            reason=r.reason,
            local_day=r.local_day.isoformat(),
            accepted_at=r.accepted_at,
            flushed=True,
        )
        for r in rows.order_by("-accepted_at", "-event_id")[: limit + 1]
    ]
    try:
        _, unflushed = cache.read_unflushed(player_id)
    except hotstate.RedisUnavailable:
        unflushed = []
    seen = {e["event_id"] for e in flushed}
    merged = list(flushed)
    for e in unflushed:
        if e["event_id"] in seen:
            continue
        accepted = dt.datetime.fromtimestamp(float(e["accepted_at"]), tz=dt.UTC)
        if after is not None and (accepted, uuid.UUID(e["event_id"])) >= (after.accepted_at, after.event_id):
            continue
        merged.append(
            _entry(
                event_id=e["event_id"],
                kind=e["kind"],
                lesson_id=e.get("lesson_id"),
                amount=int(e["amount"]),
                reason=e.get("reason"),
                local_day=e["local_day"],
                accepted_at=accepted,
                flushed=False,
            )
        )
    merged.sort(key=lambda e: (e["accepted_at"], uuid.UUID(e["event_id"])), reverse=True)
    page = merged[:limit]
    next_cursor = None
    if len(merged) > limit:
        last = page[-1]
        next_cursor = Cursor(last["accepted_at"], uuid.UUID(last["event_id"])).encode()
    return page, next_cursor


@dataclass(frozen=True)
class OpenDeadLetter:
    id: int
    player_id: int
    event_id: uuid.UUID
    # None when the payload cannot be read (broken JSON).
    kind: str | None
    amount: int | None
    error: str
    created_at: dt.datetime
    age_s: int


def dead_letter_list_open(*, player_ids: list[int] | None = None, limit: int | None = None) -> list[OpenDeadLetter]:
    """Dead letters not yet retried or discarded, oldest first."""
    rows = DeadLetter.objects.filter(resolved_at__isnull=True).order_by("created_at", "id")
    if player_ids:
        rows = rows.filter(player_id__in=player_ids)
    now = timezone.now()
    found = []
    for letter in rows[:limit] if limit else rows:
        event = counted_event(letter.payload)
        found.append(
            OpenDeadLetter(
                id=letter.pk,
                player_id=letter.player_id,
                event_id=letter.event_id,
                kind=str(event["kind"]) if event else None,
                amount=int(event["amount"]) if event else None,
                error=letter.error,
                created_at=letter.created_at,
                age_s=max(round((now - letter.created_at).total_seconds()), 0),
            )
        )
    return found


def dead_letter_open_count() -> int:
    return DeadLetter.objects.filter(resolved_at__isnull=True).count()
