"""The narrow ledger (issue 14): what each row keeps and how it is found without indexes of its own
for the event id and the key digest — a one-byte kind the code never sees, NULL for no actor, a
64-bit fingerprint digest that still tells a different request, events found by (student, time,
id), the same event refused twice by the database, two secondary indexes and no more."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core import hotstate
from core.errors import ApiError
from players.tests.factories import PlayerFactory
from wallets import cache, flush, flush_sql, selectors, services
from wallets.events import PendingEvent
from wallets.models import FP_DIGEST_BYTES, EventKind, LedgerEvent

pytestmark = [pytest.mark.django_db(transaction=True)]


def lesson(player_id: int, lesson_id: str, key: str, *, day: dt.date | None = None, body: str = "80"):
    return services.wallet_award(
        request=services.AwardRequest(
            player_id=player_id,
            kind=EventKind.LESSON,
            base_amount=10,
            local_day=day or timezone.now().date(),
            idem_scope=f"p:{player_id}|lesson_complete|{player_id}",
            idem_key=key,
            fingerprint=uuid.uuid5(uuid.NAMESPACE_OID, f"{lesson_id}:{body}").hex * 2,
            lesson_id=lesson_id,
        )
    )


@pytest.mark.parametrize("path", ["redis", "database"])
def test_a_row_keeps_the_kind_as_a_code_no_actor_as_null_and_64_bits_of_fingerprint(settings, path):
    settings.MEMORA_HOT_STATE = path
    profile = PlayerFactory()
    outcome = lesson(profile.pk, "a", "k1")
    flush.wallet_flush(trigger="manual")
    event = LedgerEvent.objects.get(event_id=outcome.body["event_id"])
    assert event.kind == EventKind.LESSON and event.actor is None
    assert len(bytes(event.fp_digest)) == FP_DIGEST_BYTES
    assert LedgerEvent.objects.filter(kind=EventKind.LESSON, kind__in=["lesson", "service"]).count() == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT kind FROM wallets_ledgerevent WHERE id = %s", [event.pk])
        assert cursor.fetchone()[0] == 1  # the code: wallets.models.EVENT_KIND_CODES


@pytest.mark.parametrize("path", ["redis", "database"])
def test_a_different_body_under_the_same_key_is_still_refused_after_the_ledger_answers(settings, path):
    profile = PlayerFactory()
    first = lesson(profile.pk, "a", "same")
    flush.wallet_flush(trigger="manual")
    if path == "database":
        settings.MEMORA_HOT_STATE = "database"
    else:
        redis = hotstate.connection()  # Redis came back empty: the record is rebuilt from the row
        redis.delete(*redis.scan_iter(match=f"{settings.MEMORA_REDIS_KEY_PREFIX}:*"))
    replay = lesson(profile.pk, "a", "same")  # rebuilt from the ledger's row on either path
    assert replay.replayed and replay.body == first.body
    with pytest.raises(ApiError) as refused:
        lesson(profile.pk, "a", "same", body="100")
    assert refused.value.code == "idempotency_key_reused"


def test_a_record_written_before_the_64_bit_digest_still_replays(settings):
    profile = PlayerFactory()
    first = lesson(profile.pk, "a", "old")
    key = cache.idem_key(
        profile.pk,
        services.AwardRequest(
            player_id=profile.pk,
            kind=EventKind.LESSON,
            base_amount=10,
            local_day=timezone.now().date(),
            idem_scope=f"p:{profile.pk}|lesson_complete|{profile.pk}",
            idem_key="old",
            fingerprint="",
        ).idem_digest,
    )
    redis = hotstate.connection()
    record = json.loads(redis.get(key))
    # The whole SHA-256, as records held it before.
    record["fp"] = uuid.uuid5(uuid.NAMESPACE_OID, "a:80").hex * 2
    redis.set(key, json.dumps(record), px=60_000)
    replay = lesson(profile.pk, "a", "old")
    assert replay.replayed and replay.body == first.body
    with pytest.raises(ApiError):
        lesson(profile.pk, "a", "old", body="100")


def test_events_are_found_by_student_time_and_id():
    profile, other = PlayerFactory(), PlayerFactory()
    outcome = lesson(profile.pk, "a", "k")
    flush.wallet_flush(trigger="manual")
    event = LedgerEvent.objects.get(event_id=outcome.body["event_id"])
    at = event.accepted_at
    found = selectors.ledger_events_written(
        [
            (profile.pk, event.event_id, at + dt.timedelta(microseconds=400)),  # a decoding's rounding
            (other.pk, event.event_id, at),  # another student's: not this row
            (profile.pk, uuid.uuid4(), at),
        ]
    )
    assert found == {event.event_id}
    assert selectors.ledger_events_written([(profile.pk, event.event_id, at + dt.timedelta(hours=1))]) == set()


def test_the_same_event_cannot_be_written_twice():
    profile = PlayerFactory()
    lesson(profile.pk, "a", "k")
    raw = cache.read_unflushed(profile.pk)[1][0]
    event = PendingEvent.from_redis(profile.pk, json.dumps(raw))
    flush.wallet_flush(trigger="manual")
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(flush_sql.insert_sql(), event.row(native_uuid=bool(connection.features.has_native_uuid_field)))


def test_the_ledger_has_the_two_indexes_the_lookups_need():
    """History, an event by id and a key digest read the history index (student, accepted time,
    event id), unique; the day's lessons their own (student, day). Every other index is bytes on
    every event (docs/NARROW_LEDGER.md)."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, LedgerEvent._meta.db_table)
    indexes = {
        name: (c["columns"], c["unique"])
        for name, c in constraints.items()
        if (c["index"] or c["unique"]) and not c["primary_key"]
    }
    assert indexes == {
        "ledger_player_accepted": (["player_id", "accepted_at", "event_id"], True),
        "ledger_player_day": (["player_id", "local_day"], False),
    }
