"""Factories of the rewards half: award requests for the services (no HTTP) and ledger events as
the database path writes them."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import factory
from django.utils import timezone

from players.tests.factories import PlayerFactory
from wallets import idempotency, services
from wallets.models import EventKind, LedgerEvent


def award_request(*, player_id: int, kind: str = EventKind.SERVICE, **fields: Any) -> services.AwardRequest:
    """An award as a view builds it: a fresh key unless given, the fingerprint of its body."""
    key = fields.pop("idem_key", None) or uuid.uuid4().hex
    amount = fields.pop("base_amount", 7)
    endpoint = "lesson_complete" if kind == EventKind.LESSON else "wallet_award_xp"
    caller = f"p:{player_id}" if kind == EventKind.LESSON else "k:1"
    return services.AwardRequest(
        player_id=player_id,
        kind=kind,
        base_amount=amount,
        local_day=fields.pop("local_day", timezone.now().date()),
        idem_scope=idempotency.scope(caller=caller, endpoint=endpoint, player_id=player_id),
        idem_key=key,
        fingerprint=fields.pop(
            "fingerprint",
            idempotency.fingerprint(method="POST", route=endpoint, path_params={}, body={"amount": amount}),
        ),
        reason=fields.pop("reason", None if kind == EventKind.LESSON else "test"),
        **fields,
    )


def lesson_completed(
    *, player_id: int, lesson_id: str = "lesson", score: int | None = 100, timezone_name: str = "UTC", **call: Any
) -> dict[str, Any]:
    """A lesson completed through the service as the view calls it (no HTTP); the 201 body."""
    body = {} if score is None else {"score": score}
    outcome = services.wallet_lesson_complete(
        player_id=player_id,
        timezone_name=timezone_name,
        lesson_id=lesson_id,
        score=score,
        idem_key=call.pop("idem_key", None) or uuid.uuid4().hex,
        body=body,
        **call,
    )
    assert outcome.status == 201, outcome
    return outcome.body


class LedgerEventFactory(factory.django.DjangoModelFactory):
    """A ledger row (its after-state left for the test to set when it matters)."""

    class Meta:
        model = LedgerEvent

    player = factory.SubFactory(PlayerFactory)
    kind = EventKind.SERVICE
    amount = 5
    accepted_at = factory.LazyFunction(timezone.now)
    local_day = factory.LazyFunction(lambda: timezone.now().date())
    generation = 0
    version = factory.Sequence(lambda n: n + 1)
    xp_total_after = 0
    streak_after = 0
    longest_after = 0
    last_day_after = factory.LazyFunction(lambda: timezone.now().date() - dt.timedelta(days=1))
