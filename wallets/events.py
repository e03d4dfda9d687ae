"""One pending event: the award script's JSON in, a ledger row out. The only decoder of a Redis
event; the flush, the dead-letter retry and the benchmarks use it."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from wallets import idempotency, rules
from wallets.models import EVENT_KIND_CODES, FP_DIGEST_BYTES, EventKind, LedgerEvent

# The ledger columns the flush writes, in the order of PendingEvent.row (every concrete field but
# the BIGINT key).
LEDGER_COLUMNS: tuple[str, ...] = (
    "event_id",
    "player_id",
    "kind",
    "amount",
    "lesson_id",
    "reason",
    "accepted_at",
    "local_day",
    "idem_digest",
    "fp_digest",
    "generation",
    "version",
    "xp_total_after",
    "xp_day_after",
    "capped",
    "streak_after",
    "longest_after",
    "last_day_after",
    "freezes_after",
    "break_after",
    "streak_before",
    "actor",
)
if set(LEDGER_COLUMNS) != {f.column for f in LedgerEvent._meta.concrete_fields if f.name != "id"}:
    raise ImproperlyConfigured("wallets.events.LEDGER_COLUMNS must name every ledger column but the key")
_KINDS = frozenset(EventKind.values)
_MAX_LENGTH: dict[str, int] = {
    f.name: int(f.max_length or 0) for f in LedgerEvent._meta.concrete_fields if getattr(f, "max_length", None)
}
_LEGACY_SUFFIXES = ("#freeze_used:", "#freeze_earned")


def sql_datetime(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _digest(value: Any, size: int = idempotency.DIGEST_BYTES) -> bytes | None:
    if not value:
        return None
    raw = bytes.fromhex(str(value))
    if len(raw) < size:
        raise ValueError("digest too short")
    return raw[:size]


def _legacy_digests(e: dict[str, Any]) -> tuple[bytes | None, bytes | None]:
    """Events written before the ledger kept digests carry the raw key and the whole fingerprint."""
    key = e.get("idem_key") or ""
    for suffix in _LEGACY_SUFFIXES:
        if e.get("kind", "").startswith("freeze") and suffix in key:
            key = key.rsplit("#", 1)[0]
    idem = idempotency.ledger_digest(idempotency.key_digest(e.get("idem_scope") or "", key)) if key else None
    return idem, _digest(e.get("fingerprint"), FP_DIGEST_BYTES)


# What the cold rebuild reads of an event that counts as accepted (pending or dead-lettered).
_COUNTED_FIELDS = frozenset(
    ("event_id", "kind", "amount", "version", "local_day", "streak_after", "longest_after", "last_day_after")
)


def counted_event(raw: bytes | str) -> dict[str, Any] | None:
    """A dead letter's event as the cold rebuild counts it, or None when the payload is not even
    that (broken JSON, no id or amount): such a letter has no XP to show, and must not stop the
    student's rebuild. Looser than :meth:`PendingEvent.from_redis`: an event the ledger refuses
    (a reason too long) still counts until it is retried or discarded."""
    try:
        e = json.loads(raw)
        if not isinstance(e, dict) or not e.keys() >= _COUNTED_FIELDS:
            return None
        uuid.UUID(str(e["event_id"]))
        int(e["amount"]), int(e["version"]), int(e.get("gen") or 0)
    except (ValueError, TypeError):
        return None
    return e


# Not frozen: a frozen dataclass sets each field through object.__setattr__, a third of the
# decoding's time in the flush. Nothing changes an event once decoded.
@dataclass(slots=True)
class PendingEvent:
    event_id: uuid.UUID
    player_id: int
    kind: str
    amount: int
    lesson_id: str | None
    reason: str | None
    accepted_at: dt.datetime
    local_day: dt.date
    idem_digest: bytes | None
    fp_digest: bytes | None
    generation: int
    version: int
    xp_total_after: int
    xp_day_after: int
    capped: bool
    streak_after: int
    longest_after: int
    last_day_after: dt.date | None
    freezes_after: int
    streak_lost_after: int  # the event's key and the column stay `break_after`
    streak_before: int | None
    actor: str | None
    # The main event of the request this one belongs to (a freeze used or earned by a lesson).
    request_id: str

    @property
    def order(self) -> tuple[int, int]:
        """(generation, version): the order of every event of a student, on every path."""
        return self.generation, self.version

    @property
    def streak(self) -> rules.Streak:
        return rules.Streak(
            self.streak_after, self.longest_after, self.last_day_after, self.freezes_after, self.streak_lost_after
        )

    @classmethod
    def from_redis(cls, player_id: int, raw: bytes | str) -> PendingEvent:
        """Decode and check one event. Raises ValueError, KeyError or TypeError on a bad one: an
        event the ledger would refuse never reaches an INSERT."""
        e = json.loads(raw)
        if not isinstance(e, dict):
            raise TypeError("an event is a JSON object")
        if e["kind"] not in _KINDS:
            raise ValueError(f"unknown kind {e['kind']!r}")
        if "idem" in e or "fp" in e:
            idem, fp = _digest(e.get("idem")), _digest(e.get("fp"), FP_DIGEST_BYTES)
            body: dict[str, Any] = {}
        else:
            idem, fp = _legacy_digests(e)
            body = json.loads(e["body"]) if isinstance(e.get("body"), str) else (e.get("body") or {})
        last_day = dt.date.fromisoformat(e["last_day_after"]) if e.get("last_day_after") else None
        lesson_id = e.get("lesson_id") or None
        if lesson_id is not None and not rules.LESSON_ID_RE.fullmatch(lesson_id):
            raise ValueError("lesson id outside its pattern")
        streak_before = e.get("streak_before", body.get("streak_before"))
        event = cls(
            event_id=uuid.UUID(e["event_id"]),
            player_id=player_id,
            kind=str(e["kind"]),
            amount=int(e["amount"]),
            lesson_id=lesson_id,
            reason=e.get("reason") or None,
            accepted_at=dt.datetime.fromtimestamp(float(e["accepted_at"]), tz=dt.UTC),
            local_day=dt.date.fromisoformat(e["local_day"]),
            idem_digest=idem,
            fp_digest=fp,
            generation=int(e.get("gen") or 0),
            version=int(e["version"]),
            xp_total_after=int(e["xp_total_after"]),
            xp_day_after=int(e.get("xp_day_after", (body.get("wallet") or {}).get("xp_today", 0)) or 0),
            capped=bool(e.get("capped", body.get("capped", False))),
            streak_after=int(e["streak_after"]),
            longest_after=int(e["longest_after"]),
            last_day_after=last_day,
            freezes_after=int(e.get("freezes_after") or 0),
            streak_lost_after=int(e.get("break_after") or 0),
            streak_before=int(streak_before) if streak_before is not None else None,
            actor=str(e.get("actor") or "") or None,
            request_id=str(e.get("req") or e["event_id"]),
        )
        for name in ("reason", "actor"):
            value = getattr(event, name)
            if value is not None and len(value) > _MAX_LENGTH[name]:
                raise ValueError(f"{name} longer than {_MAX_LENGTH[name]}")
        if event.amount < 0:
            raise ValueError("negative amount")
        return event

    def row(self, *, native_uuid: bool) -> tuple[Any, ...]:
        """The values of :data:`LEDGER_COLUMNS`, as the database driver takes them."""
        last = self.last_day_after
        return (
            str(self.event_id) if native_uuid else self.event_id.hex,
            self.player_id,
            EVENT_KIND_CODES[self.kind],
            self.amount,
            self.lesson_id,
            self.reason,
            sql_datetime(self.accepted_at),
            self.local_day.isoformat(),
            self.idem_digest,
            self.fp_digest,
            self.generation,
            self.version,
            self.xp_total_after,
            self.xp_day_after,
            self.capped,
            self.streak_after,
            self.longest_after,
            last.isoformat() if last else None,
            self.freezes_after,
            self.streak_lost_after,
            self.streak_before,
            self.actor,
        )
