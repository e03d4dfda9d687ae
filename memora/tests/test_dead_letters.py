"""Dead letters, end to end against real MariaDB and Redis: an event the database refuses is set
aside by the flush, shown by /status, /metrics, the student overview and `sync_wallets
--dead-letters`, counted as accepted until support retries it into the ledger (once) or discards it
(and Redis stops showing its XP); each action audited."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from core import hotstate
from core.errors import ApiError
from memora.tests.support import staff_client
from memora.tests.test_metrics import TOKEN, scrape
from players.tests.factories import PlayerFactory
from wallets import cache, deadletters, flush, services, sync, verification
from wallets.models import DeadLetter, LedgerEvent, PlayerWallet, WalletOutbox
from wallets.tests.factories import award_request

pytestmark = pytest.mark.django_db(transaction=True)


def award(player_id: int, amount: int, key: str | None = None) -> services.AwardOutcome:
    request = award_request(player_id=player_id, base_amount=amount, idem_key=key, fingerprint=uuid.uuid4().hex)
    outcome = services.wallet_award(request=request)
    assert outcome.path == "cache"
    return outcome


def shown_xp(player_id: int, *, cold: bool = False) -> int:
    """The XP the student sees; ``cold`` drops the Redis wallet first (the cold rebuild)."""
    if cold:
        hotstate.connection().delete(cache.wallet_key(player_id), cache.lessons_key(player_id))
    return int(sync.wallet_read(player_id=player_id, today=timezone.now().date())["xp_total"])


def stored_xp(player_id: int) -> int:
    return PlayerWallet.objects.get(player_id=player_id).xp_total


def status_item(api) -> dict:
    response = api.get("/status", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    return response.json()["checks"]["dead_letters"]


def letter_from_pending(player_id: int) -> DeadLetter:
    """An event the award script really wrote, taken out of the pending list and set aside as the
    flush would (a refusal simulated: its payload is valid)."""
    redis = hotstate.connection()
    raw = redis.lrange(cache.pending_key(player_id), 0, -1)[-1]
    redis.lrem(cache.pending_key(player_id), 1, raw)
    return DeadLetter.objects.create(
        player_id=player_id,
        event_id=uuid.UUID(json.loads(raw)["event_id"]),
        payload=raw.decode(),
        error="simulated refusal",
        created_at=timezone.now(),
    )


def test_a_broken_event_is_shown_everywhere_and_a_retry_leaves_it_open(api, settings):
    settings.MEMORA_METRICS_TOKEN = TOKEN
    profile = PlayerFactory()
    award(profile.pk, 7)
    hotstate.connection().rpush(cache.pending_key(profile.pk), "{not json")
    assert status_item(api) == {"ok": True, "count": 0}
    assert flush.wallet_flush(trigger="manual").dead_lettered == 1
    letter = DeadLetter.objects.get()
    assert status_item(api) == {"ok": False, "count": 1}
    assert scrape(api)["memora_dead_letters_open"] == 1
    # The student's wallet still rebuilds: a letter with nothing readable counts for nothing.
    assert shown_xp(profile.pk, cold=True) == 7

    outcome = deadletters.dead_letter_retry(letter_id=letter.pk, actor="cli:ops")
    assert outcome.result == "refused"
    letter.refresh_from_db()
    assert letter.resolved_at is None and letter.resolution == ""
    assert letter.error.startswith("undecodable:")
    assert LedgerEvent.objects.count() == 1
    assert status_item(api)["count"] == 1

    deadletters.dead_letter_discard(letter_id=letter.pk, actor="cli:ops", reason="garbage in Redis")
    assert status_item(api) == {"ok": True, "count": 0}
    assert scrape(api)["memora_dead_letters_open"] == 0
    assert (stored_xp(profile.pk), shown_xp(profile.pk), shown_xp(profile.pk, cold=True)) == (7, 7, 7)


def test_retry_writes_a_valid_letter_once_and_the_wallet_equals_its_ledger(caplog):
    profile = PlayerFactory()
    award(profile.pk, 7)
    flush.wallet_flush(trigger="manual")
    second = award(profile.pk, 5)
    letter = letter_from_pending(profile.pk)
    assert shown_xp(profile.pk, cold=True) == 12  # counted as accepted
    assert stored_xp(profile.pk) == 7

    with caplog.at_level(logging.INFO, logger="wallets.deadletters"):
        outcome = deadletters.dead_letter_retry(letter_id=letter.pk, actor="admin:agent")
    assert (outcome.result, outcome.detail) == ("written", "service +5")
    assert f"dead letter {letter.pk} of player {profile.pk} retried by admin:agent: written" in caplog.text
    event = LedgerEvent.objects.get(event_id=second.body["event_id"])
    assert event.amount == 5
    wallet = PlayerWallet.objects.get(player_id=profile.pk)
    assert (wallet.xp_total, wallet.applied_generation, wallet.version) == (12, event.generation, event.version)
    assert verification.wallet_verify(player_ids=[profile.pk]) == []
    letter.refresh_from_db()
    assert (letter.resolution, letter.resolved_by) == ("retried", "admin:agent")
    assert letter.resolved_at is not None

    again = deadletters.dead_letter_retry(letter_id=letter.pk, actor="admin:agent")
    assert again.result == "already_resolved"
    assert "retried by admin:agent" in again.detail
    flush.wallet_flush(trigger="manual")
    assert LedgerEvent.objects.filter(player_id=profile.pk).count() == 2
    assert stored_xp(profile.pk) == 12
    assert (shown_xp(profile.pk), shown_xp(profile.pk, cold=True)) == (12, 12)


def test_retry_of_an_event_already_in_the_ledger_adds_nothing():
    profile = PlayerFactory()
    outcome = award(profile.pk, 5)
    raw = hotstate.connection().lrange(cache.pending_key(profile.pk), 0, -1)[0]
    flush.wallet_flush(trigger="manual")
    letter = DeadLetter.objects.create(
        player_id=profile.pk,
        event_id=uuid.UUID(outcome.body["event_id"]),
        payload=raw.decode(),
        error="simulated",
        created_at=timezone.now(),
    )
    result = deadletters.dead_letter_retry(letter_id=letter.pk, actor="cli:ops")
    assert result.result == "already_written"
    assert LedgerEvent.objects.count() == 1
    assert stored_xp(profile.pk) == 5
    letter.refresh_from_db()
    assert (letter.resolution, letter.resolution_reason) == ("retried", "already in the ledger; nothing added")


def test_retry_of_a_request_already_counted_discards_it_as_a_duplicate():
    """A Redis rollback lost the key's record and the client's retry was accepted again: the
    second event carries the same key digest. Retrying its letter must not count the request twice."""
    profile = PlayerFactory()
    award(profile.pk, 5, key="once")
    raw = hotstate.connection().lrange(cache.pending_key(profile.pk), 0, -1)[0]
    flush.wallet_flush(trigger="manual")
    again = json.loads(raw)
    again["event_id"] = again["req"] = str(uuid.uuid4())
    again["accepted_at"] = f"{float(again['accepted_at']) + 2:.6f}"
    letter = DeadLetter.objects.create(
        player_id=profile.pk,
        event_id=uuid.UUID(again["event_id"]),
        payload=json.dumps(again),
        error="simulated",
        created_at=timezone.now(),
    )
    generation = PlayerWallet.objects.get(player_id=profile.pk).generation
    assert shown_xp(profile.pk, cold=True) == 10  # both counted until support acts
    result = deadletters.dead_letter_retry(letter_id=letter.pk, actor="cli:ops")
    assert result.result == "duplicate"
    assert LedgerEvent.objects.count() == 1
    wallet = PlayerWallet.objects.get(player_id=profile.pk)
    assert (wallet.xp_total, wallet.generation) == (5, generation + 1)
    letter.refresh_from_db()
    assert letter.resolution == "discarded"
    assert (shown_xp(profile.pk), shown_xp(profile.pk, cold=True)) == (5, 5)


def test_retry_of_an_event_whose_request_partner_is_in_the_ledger_writes_it():
    """One award call's events share the key digest (a lesson and the freeze it used): a letter
    whose sibling was written is not a duplicate of it."""
    profile = PlayerFactory()
    award(profile.pk, 5)
    main = json.loads(hotstate.connection().lrange(cache.pending_key(profile.pk), 0, -1)[0])
    flush.wallet_flush(trigger="manual")
    before = float(main["accepted_at"]) - 0.000001
    freeze = {**main, "event_id": str(uuid.uuid4()), "kind": "freeze_used", "amount": 0}
    freeze.update(version=int(main["version"]) - 1, accepted_at=f"{before:.6f}")
    # A sibling without the main event's id (as the main event is, seen from its freeze).
    other = {**freeze, "event_id": str(uuid.uuid4()), "version": int(main["version"]) - 2}
    other["req"] = other["event_id"]
    for event in (freeze, other):
        letter = DeadLetter.objects.create(
            player_id=profile.pk,
            event_id=uuid.UUID(event["event_id"]),
            payload=json.dumps(event),
            error="simulated",
            created_at=timezone.now(),
        )
        assert deadletters.dead_letter_retry(letter_id=letter.pk, actor="cli:ops").result == "written"
    assert LedgerEvent.objects.filter(player_id=profile.pk).count() == 3
    assert stored_xp(profile.pk) == 5
    assert verification.wallet_verify(player_ids=[profile.pk]) == []


def test_an_event_refused_for_a_long_reason_counts_until_discarded(caplog):
    profile = PlayerFactory()
    award(profile.pk, 7)
    flush.wallet_flush(trigger="manual")
    award(profile.pk, 5)
    redis = hotstate.connection()
    event = json.loads(redis.lindex(cache.pending_key(profile.pk), 0))
    event["reason"] = "x" * 201
    redis.lset(cache.pending_key(profile.pk), 0, json.dumps(event))
    assert flush.wallet_flush(trigger="manual").dead_lettered == 1
    letter = DeadLetter.objects.get()
    assert "reason longer than 200" in letter.error
    assert (stored_xp(profile.pk), shown_xp(profile.pk), shown_xp(profile.pk, cold=True)) == (7, 12, 12)

    assert deadletters.dead_letter_retry(letter_id=letter.pk, actor="cli:ops").result == "refused"
    generation = PlayerWallet.objects.get(player_id=profile.pk).generation
    with caplog.at_level(logging.INFO, logger="wallets.deadletters"):
        outcome = deadletters.dead_letter_discard(letter_id=letter.pk, actor="admin:agent", reason=" re-sent by hand ")
    assert outcome.result == "discarded"
    assert "discarded by admin:agent: discarded (re-sent by hand)" in caplog.text
    letter.refresh_from_db()
    assert (letter.resolution, letter.resolved_by, letter.resolution_reason) == (
        "discarded",
        "admin:agent",
        "re-sent by hand",
    )
    wallet = PlayerWallet.objects.get(player_id=profile.pk)
    assert (wallet.xp_total, wallet.generation) == (7, generation + 1)
    # The rebuild after commit took the outbox row with it; Redis no longer shows the 5 XP.
    assert not WalletOutbox.objects.filter(player_id=profile.pk).exists()
    assert (shown_xp(profile.pk), shown_xp(profile.pk, cold=True)) == (7, 7)
    assert verification.wallet_verify(player_ids=[profile.pk]) == []
    # A rollback handing the discarded event back to Redis does not bring its XP back.
    redis.rpush(cache.pending_key(profile.pk), json.dumps(event))
    assert shown_xp(profile.pk, cold=True) == 7
    flush.wallet_flush(player_ids=[profile.pk], trigger="manual")
    assert stored_xp(profile.pk) == 7
    assert DeadLetter.objects.get().resolution == "discarded"

    assert deadletters.dead_letter_discard(letter_id=letter.pk, actor="x", reason="y").result == "already_resolved"


def test_discard_needs_a_reason_and_an_existing_letter():
    profile = PlayerFactory()
    award(profile.pk, 5)
    letter = letter_from_pending(profile.pk)
    with pytest.raises(ApiError) as refused:
        deadletters.dead_letter_discard(letter_id=letter.pk, actor="cli:ops", reason="  ")
    assert refused.value.code == "validation_error"
    with pytest.raises(ApiError) as missing:
        deadletters.dead_letter_retry(letter_id=letter.pk + 1000, actor="cli:ops")
    assert missing.value.code == "not_found"
    assert DeadLetter.objects.get().resolved_at is None


def test_sync_wallets_dead_letters_lists_retries_and_discards(capsys):
    profile = PlayerFactory()
    award(profile.pk, 7)
    valid = letter_from_pending(profile.pk)
    award(profile.pk, 3)
    hotstate.connection().rpush(cache.pending_key(profile.pk), "{not json")
    call_command("sync_wallets", "--no-progress")  # the flush itself is unchanged
    assert "wrote: 1 students, 1 events" in capsys.readouterr().out
    broken = DeadLetter.objects.exclude(pk=valid.pk).get()

    call_command("sync_wallets", "--dead-letters")
    listing = capsys.readouterr().out
    assert f"{valid.pk}\tplayer {profile.pk}\t{valid.event_id}\tservice +7\tage " in listing
    assert f"{broken.pk}\tplayer {profile.pk}\t{broken.event_id}\tundecodable\tage " in listing
    assert "2 open dead letters" in listing

    call_command("sync_wallets", "--dead-letters", "--retry", str(valid.pk), "--actor", "cli:ops")
    assert f"dead letter {valid.pk} of player {profile.pk}: written (service +7)" in capsys.readouterr().out
    call_command("sync_wallets", "--dead-letters", "--retry", str(broken.pk))
    assert f"dead letter {broken.pk} of player {profile.pk}: refused (undecodable:" in capsys.readouterr().out
    with pytest.raises(CommandError, match="--reason"):
        call_command("sync_wallets", "--dead-letters", "--discard", str(broken.pk))
    call_command("sync_wallets", "--dead-letters", "--discard", str(broken.pk), "--reason", "garbage")
    assert "discarded (garbage)" in capsys.readouterr().out
    broken.refresh_from_db()
    assert broken.resolved_by.startswith("cli:")
    call_command("sync_wallets", "--dead-letters")
    assert "0 open dead letters" in capsys.readouterr().out
    assert stored_xp(profile.pk) == 10
    assert verification.wallet_verify(player_ids=[profile.pk]) == []

    with pytest.raises(CommandError, match="No dead letter"):
        call_command("sync_wallets", "--dead-letters", "--retry", "999999")
    with pytest.raises(CommandError, match="--dead-letters"):
        call_command("sync_wallets", "--retry", str(valid.pk))


def test_the_student_overview_lists_open_dead_letters():
    profile = PlayerFactory()
    award(profile.pk, 5)
    letter = letter_from_pending(profile.pk)
    client, _ = staff_client(f"agent_{uuid.uuid4().hex[:6]}", support=True)
    page = client.get(f"/admin/players/playerprofile/{profile.pk}/overview/").text
    assert 'id="dead-letters"' in page
    assert str(letter.event_id) in page and "simulated refusal" in page
    deadletters.dead_letter_retry(letter_id=letter.pk, actor="cli:ops")
    page = client.get(f"/admin/players/playerprofile/{profile.pk}/overview/").text
    assert str(letter.event_id) not in page.split('id="dead-letters"')[1].split("</table>")[0]
