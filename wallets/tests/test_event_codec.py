"""The pending-event codec (``wallets.events.decode``): the award script's JSON straight into the
ledger row the flush inserts, with every check of the typed decoder, the shortcuts it takes for the
award script's own forms giving what the general parsers give, and older events still read."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid

import pytest

from wallets import idempotency
from wallets.events import LEDGER_COLUMNS, LedgerRow, PendingEvent, decode, sql_datetime
from wallets.models import EVENT_KIND_CODES, FP_DIGEST_BYTES, LedgerEvent

EVENT_ID = "6f1c1c52-3d47-4c1e-9a55-0d7a0b8f2e11"


def award_event(**changes: object) -> dict[str, object]:
    """An event as wallets/lua/award.lua writes it (cjson: numbers, booleans, "" for none)."""
    event: dict[str, object] = {
        "event_id": EVENT_ID,
        "kind": "lesson",
        "amount": 10,
        "lesson_id": "algebra-1",
        "reason": "",
        "local_day": "2026-11-30",
        "accepted_at": "1764500000.123457",
        "gen": 2,
        "version": 7,
        "xp_total_after": 70,
        "xp_day_after": 20,
        "capped": False,
        "streak_after": 3,
        "longest_after": 9,
        "last_day_after": "2026-11-30",
        "freezes_after": 1,
        "break_after": 4,
        "idem": "00112233445566778899aabbccddeeff00112233",
        "fp": "0123456789abcdef0123",
        "req": EVENT_ID,
        "actor": "",
    }
    event.update(changes)
    return event


def test_an_award_event_becomes_its_ledger_row_by_name():
    decoded = decode(42, json.dumps(award_event()).encode(), native_uuid=True)
    assert LedgerRow._fields == LEDGER_COLUMNS
    assert set(LEDGER_COLUMNS) == {f.column for f in LedgerEvent._meta.concrete_fields if f.name != "id"}
    assert decoded.row == LedgerRow(
        event_id=EVENT_ID,
        player_id=42,
        kind=EVENT_KIND_CODES["lesson"],
        amount=10,
        lesson_id="algebra-1",
        reason=None,
        accepted_at="2025-11-30 10:53:20.123457",
        local_day="2026-11-30",
        idem_digest=bytes.fromhex("00112233445566778899aabbccddeeff"),
        fp_digest=bytes.fromhex("0123456789abcdef")[:FP_DIGEST_BYTES],
        generation=2,
        version=7,
        xp_total_after=70,
        xp_day_after=20,
        capped=False,
        streak_after=3,
        longest_after=9,
        last_day_after="2026-11-30",
        freezes_after=1,
        break_after=4,
        streak_before=None,
        actor=None,
    )
    assert decoded.request_id == EVENT_ID
    assert decode(42, json.dumps(award_event()), native_uuid=False).row.event_id == uuid.UUID(EVENT_ID).hex


def test_the_typed_event_gives_the_same_row():
    raw = json.dumps(award_event(actor="svc:grader", reason="bonus", streak_before=5))
    for native in (True, False):
        assert PendingEvent.from_redis(42, raw).row(native_uuid=native) == decode(42, raw, native_uuid=native).row


def test_the_accepted_time_as_the_award_script_writes_it_is_the_time_a_float_gives():
    rng = random.Random(7)
    for _ in range(20000):
        text = f"{rng.uniform(1.6e9, 2.1e9):.6f}"
        row = decode(1, json.dumps(award_event(accepted_at=text)), native_uuid=True).row
        assert row.accepted_at == sql_datetime(dt.datetime.fromtimestamp(float(text), tz=dt.UTC)), text
    # Other forms (a number, fewer decimals) go through a float.
    for value in (1764500000, 1764500000.5, "1764500000.5"):
        row = decode(1, json.dumps(award_event(accepted_at=value)), native_uuid=True).row
        assert row.accepted_at == sql_datetime(dt.datetime.fromtimestamp(float(value), tz=dt.UTC))


def test_other_spellings_are_normalised_as_the_typed_parsers_do():
    upper = EVENT_ID.upper()
    row = decode(
        1, json.dumps(award_event(event_id=upper, local_day="20261130", last_day_after="")), native_uuid=True
    ).row
    assert row.event_id == EVENT_ID
    assert row.local_day == "2026-11-30"
    assert row.last_day_after is None
    # The day cache keeps each spelling's own answer.
    assert decode(1, json.dumps(award_event(local_day="2026-11-29")), native_uuid=True).row.local_day == "2026-11-29"


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "jackpot"},
        {"kind": ["lesson"]},
        {"event_id": 12345},
        {"event_id": "not-a-uuid"},
        {"lesson_id": "../etc"},
        {"amount": -1},
        {"amount": "ten"},
        {"reason": "x" * 10_000},
        {"actor": "y" * 10_000},
        {"local_day": "2026-13-40"},
        {"last_day_after": "yesterday"},
        {"accepted_at": "soon"},
        {"idem": "zz"},
        {"idem": "0011"},
        {"version": None},
    ],
)
def test_an_event_the_ledger_would_refuse_never_becomes_a_row(changes):
    with pytest.raises((ValueError, KeyError, TypeError)):
        decode(1, json.dumps(award_event(**changes)), native_uuid=True)


@pytest.mark.parametrize("raw", [b"[1, 2]", b"{broken", b'"text"', "{}"])
def test_what_is_not_an_event_object_is_refused(raw):
    with pytest.raises((ValueError, KeyError, TypeError)):
        decode(1, raw, native_uuid=True)


def test_an_event_written_before_the_digests_still_decodes():
    event = award_event(idem_key="key-1", idem_scope="p:1|lesson_complete|1", fingerprint="ab" * 32)
    for name in ("idem", "fp", "xp_day_after", "capped"):
        event.pop(name)
    event["body"] = json.dumps({"wallet": {"xp_today": 30}, "capped": True, "streak_before": 2})
    row = decode(1, json.dumps(event), native_uuid=True).row
    assert row.idem_digest == idempotency.ledger_digest(idempotency.key_digest("p:1|lesson_complete|1", "key-1"))
    assert row.fp_digest == bytes.fromhex("ab" * FP_DIGEST_BYTES)
    assert (row.xp_day_after, row.capped, row.streak_before) == (30, True, 2)
