"""The audit's findings on the write-behind engine, each replayed: events handed out again after
they were written (a Redis rollback, a flusher stalled past its lease), a student deleted with
awards pending, hostile lesson ids and keys, keys and lesson ids that differ only in case, a
database-path day older Redis events must not overwrite, keys reused after the TTL."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest
import time_machine
from django.db import connections
from django.db.models import Sum
from django.utils import timezone
from redis import Redis

from core import hotstate
from players.tests.factories import PlayerFactory
from wallets import cache, flush, services, sync, verification
from wallets.models import EventKind, LedgerEvent, PlayerWallet
from wallets.tests.factories import award_request

pytestmark = [pytest.mark.django_db(transaction=True)]


def award(player_id: int, amount: int = 7, key: str | None = None, **extra) -> services.AwardOutcome:
    request = award_request(player_id=player_id, base_amount=amount, idem_key=key, fingerprint="ab" * 32, **extra)
    return services.wallet_award(request=request)


def lesson(player_id: int, lesson_id: str, key: str, day: dt.date | None = None) -> services.AwardOutcome:
    return services.wallet_award(
        request=services.AwardRequest(
            player_id=player_id,
            kind=EventKind.LESSON,
            base_amount=10,
            local_day=day or timezone.now().date(),
            idem_scope=f"p:{player_id}|lesson_complete|{player_id}",
            idem_key=key,
            fingerprint=uuid.uuid5(uuid.NAMESPACE_OID, lesson_id).hex * 2,
            lesson_id=lesson_id,
        )
    )


def assert_wallets_match_ledgers() -> None:
    for wallet in PlayerWallet.objects.all():
        total = LedgerEvent.objects.filter(player_id=wallet.player_id).aggregate(s=Sum("amount"))["s"] or 0
        assert wallet.xp_total == total, wallet.player_id
    assert verification.wallet_verify() == []


def test_events_handed_out_again_after_a_flush_are_not_counted_twice():
    """A Redis that rolled back holds as pending events the flush already wrote (audit probe:
    wallet 60 / ledger 30). Every claim, adopted or not, is checked against the ledger."""
    profile = PlayerFactory()
    for _ in range(3):
        award(profile.pk, amount=10)
    redis = hotstate.connection()
    raw = redis.lrange(cache.pending_key(profile.pk), 0, -1)
    assert flush.wallet_flush(trigger="manual").events == 3
    # The rollback: the same events pending again, the student dirty again.
    redis.rpush(cache.pending_key(profile.pk), *raw)
    redis.sadd(cache.dirty_key(hotstate.shard_of(profile.pk)), profile.pk)
    summary = flush.wallet_flush(trigger="manual")
    assert (summary.events, summary.already_written) == (0, 3)
    assert PlayerWallet.objects.get(player_id=profile.pk).xp_total == 30
    assert LedgerEvent.objects.filter(player_id=profile.pk).count() == 3
    assert_wallets_match_ledgers()


def test_a_flusher_stalled_past_its_lease_does_not_write_twice(settings):
    """Flusher A claims and stalls; its lease expires; B adopts and commits; A wakes and writes
    (audit probe: wallet 40 / ledger 20)."""
    settings.MEMORA_FLUSH_LEASE = 1
    profile = PlayerFactory()
    award(profile.pk, amount=10)
    award(profile.pk, amount=10)
    claimed = threading.Event()
    wake = threading.Event()
    errors: list[BaseException] = []

    def stall(_chunk: int) -> None:
        if threading.current_thread().name == "stalled":
            claimed.set()
            wake.wait(60)

    def stalled() -> None:
        try:
            flush.wallet_flush(trigger="beat")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    flush.hooks.before_write = stall
    try:
        thread = threading.Thread(target=stalled, name="stalled")
        thread.start()
        assert claimed.wait(60)
        # A client of its own with a generous timeout: this test is not about timeouts.
        redis = Redis.from_url(settings.CACHES["default"]["LOCATION"], socket_timeout=30)
        lease = float(redis.hget(cache.inflight_meta_key(profile.pk), "lease"))
        deadline = time.monotonic() + 60
        while (lambda t: t[0] + t[1] / 1e6)(redis.time()) <= lease:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        adopter = flush.wallet_flush(trigger="manual")
        assert adopter.events == 2
        wake.set()
        thread.join(60)
    finally:
        flush.hooks.before_write = None
        wake.set()
    assert not errors, errors
    assert PlayerWallet.objects.get(player_id=profile.pk).xp_total == 20
    assert LedgerEvent.objects.filter(player_id=profile.pk).count() == 2
    assert_wallets_match_ledgers()


def test_a_deleted_student_does_not_stop_the_flush_for_the_others():
    players = PlayerFactory.create_batch(3)
    for profile in players:
        award(profile.pk, amount=5)
    gone = players[1]
    gone.user.delete()
    summary = flush.wallet_flush(trigger="manual")
    assert (summary.events, summary.dropped_deleted) == (2, 1)
    assert sorted(LedgerEvent.objects.values_list("player_id", flat=True)) == sorted([players[0].pk, players[2].pk])
    assert not hotstate.connection().exists(cache.inflight_key(gone.pk))
    assert flush.wallet_flush(trigger="manual").events == 0
    assert_wallets_match_ledgers()


@pytest.mark.parametrize("path", ["redis", "database"])
def test_a_long_key_on_a_freeze_day_flushes(settings, path):
    """A 255-character key on a day that uses a freeze once made a derived key longer than its
    column: the flush set the student aside forever, the database path answered 500."""
    profile = PlayerFactory()
    key = "K" * 255
    start = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    for day in range(8):  # seven days in a row earn a freeze
        with time_machine.travel(start + dt.timedelta(days=day), tick=False):
            lesson(profile.pk, f"l{day}", f"k{day}", day=(start + dt.timedelta(days=day)).date())
    if path == "database":
        flush.wallet_flush(trigger="manual")
        settings.MEMORA_HOT_STATE = "database"
    with time_machine.travel(start + dt.timedelta(days=9), tick=False):
        outcome = lesson(profile.pk, "late", key, day=(start + dt.timedelta(days=9)).date())
    assert outcome.status == 201 and outcome.path == ("cache" if path == "redis" else "database")
    assert outcome.body["wallet"]["current_streak"] == 9  # the missed day was covered by a freeze
    settings.MEMORA_HOT_STATE = "redis"
    summary = flush.wallet_flush(trigger="manual")
    assert summary.dead_lettered == 0
    kinds = list(LedgerEvent.objects.filter(player_id=profile.pk).values_list("kind", flat=True))
    assert kinds.count(EventKind.FREEZE_USED) == 1
    assert_wallets_match_ledgers()


@pytest.mark.parametrize("path", ["redis", "database"])
def test_keys_and_lesson_ids_differing_in_case_are_different(settings, path):
    """MariaDB's default collation ignores case, Redis does not: both now count case."""
    profile = PlayerFactory()
    award(profile.pk, amount=1)  # a warm wallet
    flush.wallet_flush(trigger="manual")
    if path == "database":
        settings.MEMORA_HOT_STATE = "database"
    first = lesson(profile.pk, "Lesson-A", "Key")
    second = lesson(profile.pk, "lesson-a", "key")
    assert not first.replayed and not second.replayed
    assert (first.body["xp_awarded"], second.body["xp_awarded"]) == (10, 10)
    settings.MEMORA_HOT_STATE = "redis"
    flush.wallet_flush(trigger="manual")
    assert PlayerWallet.objects.get(player_id=profile.pk).xp_total == 21
    assert sorted(
        LedgerEvent.objects.filter(player_id=profile.pk, kind=EventKind.LESSON).values_list("lesson_id", flat=True)
    ) == ["Lesson-A", "lesson-a"]
    assert sync.wallet_cache_sync(player_id=profile.pk)  # what the outbox reconciler does
    assert sync.wallet_read(player_id=profile.pk, today=timezone.now().date())["xp_total"] == 21
    assert_wallets_match_ledgers()


def test_older_redis_events_never_overwrite_a_database_path_day(settings):
    """Events pending in Redis from day 1 are flushed after a database-path award on day 2: the
    wallet keeps day 2 (the audit's guard compared a Redis version with the database's counter)."""
    profile = PlayerFactory()
    day1 = dt.datetime(2026, 4, 1, 12, tzinfo=dt.UTC)
    with time_machine.travel(day1, tick=False):
        for i in range(5):
            lesson(profile.pk, f"a{i}", f"a{i}", day=day1.date())
    settings.MEMORA_HOT_STATE = "database"
    day2 = day1 + dt.timedelta(days=1)
    with time_machine.travel(day2, tick=False):
        outcome = lesson(profile.pk, "b", "b", day=day2.date())
    assert outcome.path == "database"
    settings.MEMORA_HOT_STATE = "redis"
    flush.wallet_flush(trigger="manual")
    wallet = PlayerWallet.objects.get(player_id=profile.pk)
    assert wallet.last_activity_date == day2.date()
    assert wallet.xp_total == 60
    assert_wallets_match_ledgers()


def test_a_key_reused_after_the_ttl_is_a_new_request_on_both_paths(settings):
    settings.MEMORA_HOT_STATE = "database"
    profile = PlayerFactory()
    start = timezone.now()
    first = award(profile.pk, amount=4, key="again")
    with time_machine.travel(start + dt.timedelta(seconds=settings.MEMORA_IDEMPOTENCY_TTL + 60)):
        second = award(profile.pk, amount=4, key="again")
        assert not second.replayed and second.body["event_id"] != first.body["event_id"]
        settings.MEMORA_HOT_STATE = "redis"
        third = award(profile.pk, amount=4, key="again")  # Redis holds the key from `second` now
        assert third.replayed and third.body["event_id"] == second.body["event_id"]
        flush.wallet_flush(trigger="manual")
    assert PlayerWallet.objects.get(player_id=profile.pk).xp_total == 8
    assert_wallets_match_ledgers()


def test_after_a_duplicate_is_dropped_the_replay_names_the_kept_event(settings):
    profile = PlayerFactory()
    award(profile.pk, amount=5, key="warm")
    settings.MEMORA_HOT_STATE = "database"
    first = award(profile.pk, amount=7, key="twice")
    settings.MEMORA_HOT_STATE = "redis"
    cache.stale_players.clear()  # another process: it never saw the failed rebuild
    redis = hotstate.connection()
    # The stale Redis knows nothing of that key.
    redis.delete(
        cache.idem_key(
            profile.pk,
            services.AwardRequest(
                player_id=profile.pk,
                kind="service",
                base_amount=7,
                local_day=timezone.now().date(),
                idem_scope=f"k:1|wallet_award_xp|{profile.pk}",
                idem_key="twice",
                fingerprint="ab" * 32,
            ).idem_digest,
        )
    )
    second = award(profile.pk, amount=7, key="twice")
    assert not second.replayed
    assert flush.wallet_flush(trigger="manual").duplicates == 1
    replay = award(profile.pk, amount=7, key="twice")
    # The first answer, as it was (the database path could not see the pending 5 then).
    assert replay.replayed and replay.body == first.body
    assert sync.wallet_read(player_id=profile.pk, today=timezone.now().date())["xp_total"] == 12
