"""Support's two answers to a dead letter (an accepted event the database refused): retry it into
the ledger, or discard it.

Both hold the student's wallet row lock, as every writer of their ledger rows does, so the ledger
lookups below are exact; both record who did it, when and why on the letter and in the log, and
rebuild the student's Redis copy after commit. Until then the letter counts as accepted (the cold
rebuild adds it like a pending event).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from dataclasses import dataclass

from django.db import DatabaseError, OperationalError, connection, transaction
from django.utils import timezone

from core.errors import ApiError, validation_error
from wallets import flush, flush_sql, replay, selectors, sync
from wallets.events import PendingEvent
from wallets.models import DeadLetter, PlayerWallet, WalletOutbox

logger = logging.getLogger(__name__)

# The wallet fields an inserted event changes (flush.WalletRow.apply's rule).
_APPLIED = (
    "xp_total",
    "current_streak",
    "longest_streak",
    "last_activity_date",
    "streak_freezes",
    "streak_lost",
    "version",
    "applied_generation",
)
# One award call's events are a microsecond apart (the award script): rows this close to the
# letter's event, of the same generation, belong to its request.
_SAME_CALL = dt.timedelta(milliseconds=1)


@dataclass(frozen=True)
class DeadLetterOutcome:
    letter_id: int
    player_id: int
    # "written", "already_written" (found in the ledger), "duplicate" (its request was already
    # counted: discarded), "refused" (still open, with the new error), "discarded",
    # "already_resolved".
    result: str
    detail: str = ""


def _player_of(letter_id: int) -> int:
    player_id = DeadLetter.objects.filter(pk=letter_id).values_list("player_id", flat=True).first()
    if player_id is None:
        raise ApiError("not_found", f"No dead letter {letter_id}.", status=404)
    return int(player_id)


def _lock(letter_id: int, player_id: int) -> tuple[PlayerWallet, DeadLetter]:
    """The wallet row first (the order of every ledger writer), then the letter."""
    PlayerWallet.objects.get_or_create(player_id=player_id)
    wallet = PlayerWallet.objects.select_for_update().get(player_id=player_id)
    letter = DeadLetter.objects.select_for_update().get(pk=letter_id)
    return wallet, letter


def _already(letter: DeadLetter) -> DeadLetterOutcome:
    when = letter.resolved_at.isoformat(timespec="seconds") if letter.resolved_at else "?"
    return DeadLetterOutcome(
        letter.pk, letter.player_id, "already_resolved", f"{letter.resolution} by {letter.resolved_by} at {when}"
    )


def _resolve(letter: DeadLetter, *, resolution: str, actor: str, reason: str, now: dt.datetime) -> None:
    letter.resolved_at = now
    letter.resolution = resolution
    letter.resolved_by = actor[:160]
    letter.resolution_reason = reason
    letter.save(update_fields=["resolved_at", "resolution", "resolved_by", "resolution_reason"])


def _rebuild_after_commit(player_id: int) -> None:
    transaction.on_commit(lambda: sync.wallet_cache_sync(player_id=player_id))


def _discard_locked(wallet: PlayerWallet, letter: DeadLetter, *, actor: str, reason: str, now: dt.datetime) -> None:
    """The cold rebuild counted the letter as accepted (and the Redis copy has shown its XP since
    the award): a database-first change, so the wallet generation moves and the outbox row makes
    sure Redis is rebuilt without it even if the rebuild after commit fails."""
    wallet.generation += 1
    wallet.save(update_fields=["generation", "updated_at"])
    WalletOutbox.objects.create(player_id=wallet.player_id, generation=wallet.generation, created_at=now)
    _resolve(letter, resolution="discarded", actor=actor, reason=reason, now=now)
    _rebuild_after_commit(wallet.player_id)


def _request_counted_elsewhere(event: PendingEvent) -> bool:
    """Its key digest among the student's requests younger than the TTL, from another request
    (the ledger does not keep the request id: a row is of this request when it is its main event,
    or was accepted by the same award call)."""
    if event.idem_digest is None:
        return False
    rows = replay.ledger_requests(player_id=event.player_id, digests=[event.idem_digest]).get(event.idem_digest, [])
    main = uuid.UUID(event.request_id)
    return any(
        not (
            row.event_id == main
            or (row.generation == event.generation and abs(row.accepted_at - event.accepted_at) < _SAME_CALL)
        )
        for row in rows
    )


def _insert(event: PendingEvent, now: dt.datetime) -> str | None:
    """The flush's plain INSERT of one row, in a savepoint; the database's refusal, or None."""
    row = event.row(native_uuid=bool(connection.features.has_native_uuid_field))
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(flush_sql.insert_sql(), row)
    except OperationalError as exc:
        if flush_sql.is_outage(exc):
            raise
        return str(exc)
    except DatabaseError as exc:
        return str(exc)
    return None


def _apply(wallet: PlayerWallet, event: PendingEvent, now: dt.datetime) -> None:
    """The flush's rule: add the amount; the streak fields and the mark only from a newer event."""
    row = flush.WalletRow(**{f.name: getattr(wallet, f.name) for f in dataclasses.fields(flush.WalletRow)})
    row.apply([event.row(native_uuid=True)], now)
    for name in _APPLIED:
        setattr(wallet, name, getattr(row, name))
    wallet.save(update_fields=[*_APPLIED, "updated_at"])


def _still_refused(letter: DeadLetter, error: str) -> DeadLetterOutcome:
    letter.error = error[:2000]
    letter.save(update_fields=["error"])
    return DeadLetterOutcome(letter.pk, letter.player_id, "refused", letter.error)


@transaction.atomic
def _retry(*, letter_id: int, player_id: int, actor: str) -> DeadLetterOutcome:
    wallet, letter = _lock(letter_id, player_id)
    if letter.resolved_at is not None:
        return _already(letter)
    now = timezone.now()
    try:
        event = PendingEvent.from_redis(player_id, letter.payload)
    except (ValueError, KeyError, TypeError) as exc:
        return _still_refused(letter, f"undecodable: {exc}")
    if selectors.ledger_events_written([(player_id, event.event_id, event.accepted_at)]):
        note = "already in the ledger; nothing added"
        _resolve(letter, resolution="retried", actor=actor, reason=note, now=now)
        _rebuild_after_commit(player_id)
        return DeadLetterOutcome(letter.pk, player_id, "already_written", note)
    if _request_counted_elsewhere(event):
        note = "duplicate: its request (Idempotency-Key) is already counted in the ledger"
        _discard_locked(wallet, letter, actor=actor, reason=note, now=now)
        return DeadLetterOutcome(letter.pk, player_id, "duplicate", note)
    refusal = _insert(event, now)
    if refusal is not None:
        return _still_refused(letter, refusal)
    _apply(wallet, event, now)
    _resolve(letter, resolution="retried", actor=actor, reason="", now=now)
    # The Redis copy already counts the event (as accepted): only rebuilt, no generation bumped.
    _rebuild_after_commit(player_id)
    return DeadLetterOutcome(letter.pk, player_id, "written", f"{event.kind} +{event.amount}")


def dead_letter_retry(*, letter_id: int, actor: str) -> DeadLetterOutcome:
    """Write the letter's event into the ledger once and add it to the wallet. An event already in
    the ledger resolves the letter without adding anything; one whose request is already counted
    is discarded as a duplicate; one the database still refuses leaves the letter open with the
    new error."""
    outcome = _retry(letter_id=letter_id, player_id=_player_of(letter_id), actor=actor)
    return _audit(outcome, "retried", actor)


@transaction.atomic
def _discard(*, letter_id: int, player_id: int, actor: str, reason: str) -> DeadLetterOutcome:
    wallet, letter = _lock(letter_id, player_id)
    if letter.resolved_at is not None:
        return _already(letter)
    _discard_locked(wallet, letter, actor=actor, reason=reason, now=timezone.now())
    return DeadLetterOutcome(letter.pk, player_id, "discarded", reason)


def dead_letter_discard(*, letter_id: int, actor: str, reason: str) -> DeadLetterOutcome:
    """Give up on the letter's event: it stops counting as accepted, and the student's Redis copy
    is rebuilt without it."""
    reason = reason.strip()
    if not reason:
        raise validation_error({"reason": ["Say why the event is discarded."]})
    outcome = _discard(letter_id=letter_id, player_id=_player_of(letter_id), actor=actor, reason=reason)
    return _audit(outcome, "discarded", actor)


def _audit(outcome: DeadLetterOutcome, action: str, actor: str) -> DeadLetterOutcome:
    """The audit line of a support action on a dead letter."""
    log = logger.warning if outcome.result == "refused" else logger.info
    log(
        "dead letter %s of player %s %s by %s: %s (%s)",
        outcome.letter_id,
        outcome.player_id,
        action,
        actor,
        outcome.result,
        outcome.detail,
    )
    return outcome
