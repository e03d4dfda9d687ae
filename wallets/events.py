"""One pending event: the award script's JSON in, a ledger row out. The only decoder of a Redis
event; the flush, the dead-letter retry and the benchmarks use it."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from django.core.exceptions import ImproperlyConfigured

from wallets import idempotency, rules
from wallets.models import EVENT_KIND_CODES, EVENT_KIND_NAMES, FP_DIGEST_BYTES, LedgerEvent


class LedgerRow(NamedTuple):
    """One ledger row as the database driver takes it (the INSERT's parameters, by column name):
    every concrete field but the BIGINT key. Dates and times are SQL strings, the event id is the
    UUID's text (or its hex where the database has no UUID type), the kind its one-byte code."""

    event_id: str
    player_id: int
    kind: int
    amount: int
    lesson_id: str | None
    reason: str | None
    accepted_at: str
    local_day: str
    idem_digest: bytes | None
    fp_digest: bytes | None
    generation: int
    version: int
    xp_total_after: int
    xp_day_after: int
    capped: bool
    streak_after: int
    longest_after: int
    last_day_after: str | None
    freezes_after: int
    break_after: int
    streak_before: int | None
    actor: str | None


class FlushEvent(NamedTuple):
    """A decoded pending event as the flush handles it: its row, and the request it belongs to
    (the main event of a lesson that also used or earned a freeze)."""

    row: LedgerRow
    request_id: str


# The ledger columns the flush writes, in the order of LedgerRow.
LEDGER_COLUMNS: tuple[str, ...] = LedgerRow._fields
if set(LEDGER_COLUMNS) != {f.column for f in LedgerEvent._meta.concrete_fields if f.name != "id"}:
    raise ImproperlyConfigured("wallets.events.LEDGER_COLUMNS must name every ledger column but the key")
_MAX_LENGTH: dict[str, int] = {
    f.name: int(f.max_length or 0) for f in LedgerEvent._meta.concrete_fields if getattr(f, "max_length", None)
}
_MAX_REASON, _MAX_ACTOR = _MAX_LENGTH["reason"], _MAX_LENGTH["actor"]
_LEGACY_SUFFIXES = ("#freeze_used:", "#freeze_earned")
# The forms the award script writes, taken as they are (anything else goes through the general
# parsers): a UUID's canonical text, and the accepted time's "%.6f" epoch seconds.
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EPOCH_TEXT = re.compile(r"([0-9]{1,10})\.([0-9]{6})")
# Checked once per process, not once per event: a day's text → its ISO form, epoch seconds → the
# SQL text of that second (a flush's events share a few days and a few seconds each).
_DAYS: dict[str, str] = {}
_SECONDS: dict[str, str] = {}
_CACHE_MAX = 4096
# A NamedTuple built from a tuple of all its fields in order, without the generated __new__'s
# Python frame (a twentieth of the flush's time with it).
_new = tuple.__new__


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


def _iso_day(text: str) -> str:
    iso = _DAYS.get(text)
    if iso is None:
        iso = dt.date.fromisoformat(text).isoformat()
        if len(_DAYS) >= _CACHE_MAX:
            _DAYS.clear()
        _DAYS[text] = iso
    return iso


def _sql_accepted(value: Any) -> str:
    """The accepted time (epoch seconds) as SQL text. The award script's ``%.6f`` text is cut at
    the point (its digits are the microseconds a float would round to, exactly); anything else goes
    through a float."""
    found = _EPOCH_TEXT.fullmatch(value) if type(value) is str else None
    if found is None:
        return sql_datetime(dt.datetime.fromtimestamp(float(value), tz=dt.UTC))
    whole, micros = found.groups()
    second = _SECONDS.get(whole)
    if second is None:
        second = dt.datetime.fromtimestamp(int(whole), tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        if len(_SECONDS) >= _CACHE_MAX:
            _SECONDS.clear()
        _SECONDS[whole] = second
    return f"{second}.{micros}"


def decode(player_id: int, raw: bytes | str, *, native_uuid: bool) -> FlushEvent:
    """Decode and check one event straight into its ledger row (the flush's hot path: no
    intermediate objects). Raises ValueError, KeyError or TypeError on a bad one: an event the
    ledger would refuse never reaches an INSERT."""
    # orjson: 3-4x json.loads here; its errors are ValueErrors too.
    e = orjson.loads(raw)
    if type(e) is not dict:
        raise TypeError("an event is a JSON object")
    kind = EVENT_KIND_CODES.get(e["kind"])
    if kind is None:
        raise ValueError(f"unknown kind {e['kind']!r}")
    event_id = e["event_id"]
    if type(event_id) is not str or _UUID_TEXT.fullmatch(event_id) is None:
        event_id = str(uuid.UUID(str(event_id)))
    if "idem" in e or "fp" in e:
        idem, fp = e.get("idem"), e.get("fp")
        idem = _digest(idem) if idem else None
        fp = _digest(fp, FP_DIGEST_BYTES) if fp else None
        xp_day = int(e.get("xp_day_after") or 0)
        capped = bool(e.get("capped", False))
        streak_before = e.get("streak_before")
    else:
        idem, fp = _legacy_digests(e)
        body = json.loads(e["body"]) if isinstance(e.get("body"), str) else (e.get("body") or {})
        xp_day = int(e.get("xp_day_after", (body.get("wallet") or {}).get("xp_today", 0)) or 0)
        capped = bool(e.get("capped", body.get("capped", False)))
        streak_before = e.get("streak_before", body.get("streak_before"))
    lesson_id = e.get("lesson_id") or None
    if lesson_id is not None and not rules.LESSON_ID_RE.fullmatch(lesson_id):
        raise ValueError("lesson id outside its pattern")
    reason = e.get("reason") or None
    if reason is not None and len(reason) > _MAX_REASON:
        raise ValueError(f"reason longer than {_MAX_REASON}")
    actor = str(e.get("actor") or "") or None
    if actor is not None and len(actor) > _MAX_ACTOR:
        raise ValueError(f"actor longer than {_MAX_ACTOR}")
    amount = int(e["amount"])
    if amount < 0:
        raise ValueError("negative amount")
    last_day = e.get("last_day_after")
    row = _new(
        LedgerRow,
        (
            event_id if native_uuid else event_id.replace("-", ""),
            player_id,
            kind,
            amount,
            lesson_id,
            reason,
            _sql_accepted(e["accepted_at"]),
            _iso_day(e["local_day"]),
            idem,
            fp,
            int(e.get("gen") or 0),
            int(e["version"]),
            int(e["xp_total_after"]),
            xp_day,
            capped,
            int(e["streak_after"]),
            int(e["longest_after"]),
            _iso_day(last_day) if last_day else None,
            int(e.get("freezes_after") or 0),
            int(e.get("break_after") or 0),
            int(streak_before) if streak_before is not None else None,
            actor,
        ),
    )
    return _new(FlushEvent, (row, str(e.get("req") or e["event_id"])))


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
    streak_lost_after: int
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
        """Decode and check one event (:func:`decode`, typed). Raises ValueError, KeyError or
        TypeError on a bad one."""
        return cls.from_flush_event(decode(player_id, raw, native_uuid=True))

    @classmethod
    def from_flush_event(cls, event: FlushEvent) -> PendingEvent:
        r = event.row
        return cls(
            event_id=uuid.UUID(r.event_id),
            player_id=r.player_id,
            kind=EVENT_KIND_NAMES[r.kind],
            amount=r.amount,
            lesson_id=r.lesson_id,
            reason=r.reason,
            accepted_at=dt.datetime.fromisoformat(r.accepted_at).replace(tzinfo=dt.UTC),
            local_day=dt.date.fromisoformat(r.local_day),
            idem_digest=r.idem_digest,
            fp_digest=r.fp_digest,
            generation=r.generation,
            version=r.version,
            xp_total_after=r.xp_total_after,
            xp_day_after=r.xp_day_after,
            capped=r.capped,
            streak_after=r.streak_after,
            longest_after=r.longest_after,
            last_day_after=dt.date.fromisoformat(r.last_day_after) if r.last_day_after else None,
            freezes_after=r.freezes_after,
            streak_lost_after=r.break_after,
            streak_before=r.streak_before,
            actor=r.actor,
            request_id=event.request_id,
        )

    def row(self, *, native_uuid: bool) -> LedgerRow:
        """The values of :data:`LEDGER_COLUMNS`, as the database driver takes them."""
        last = self.last_day_after
        return LedgerRow(
            event_id=str(self.event_id) if native_uuid else self.event_id.hex,
            player_id=self.player_id,
            kind=EVENT_KIND_CODES[self.kind],
            amount=self.amount,
            lesson_id=self.lesson_id,
            reason=self.reason,
            accepted_at=sql_datetime(self.accepted_at),
            local_day=self.local_day.isoformat(),
            idem_digest=self.idem_digest,
            fp_digest=self.fp_digest,
            generation=self.generation,
            version=self.version,
            xp_total_after=self.xp_total_after,
            xp_day_after=self.xp_day_after,
            capped=self.capped,
            streak_after=self.streak_after,
            longest_after=self.longest_after,
            last_day_after=last.isoformat() if last else None,
            freezes_after=self.freezes_after,
            break_after=self.streak_lost_after,
            streak_before=self.streak_before,
            actor=self.actor,
        )
