"""The flush's exactly-once invariants, each shown by really doing it: a real flush process
killed with SIGKILL between commit and release, a manual flush racing the beat flush, a database
error mid-run, a bad student, awards arriving during the flush."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import MySQLdb
import pytest
from django.conf import settings as django_settings
from django.db import OperationalError, connection, connections
from django.db.models import Sum
from django.utils import timezone

from core import hotstate
from players.models import PlayerProfile
from players.tests.factories import PlayerFactory
from wallets import cache, flush, services, sync, verification
from wallets.models import DeadLetter, LedgerEvent, PlayerWallet
from wallets.tests.factories import award_request

pytestmark = [pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


def award(player_id: int, amount: int = 7, key: str | None = None) -> services.AwardOutcome:
    request = award_request(player_id=player_id, base_amount=amount, idem_key=key, fingerprint=uuid.uuid4().hex)
    return services.wallet_award(request=request)


def accepted_events(players: list[PlayerProfile], per_player: int) -> dict[str, int]:
    accepted: dict[str, int] = {}
    for profile in players:
        for _ in range(per_player):
            outcome = award(profile.pk)
            accepted[outcome.body["event_id"]] = profile.pk
    return accepted


def assert_exactly_once(accepted: dict[str, int]) -> None:
    ledger = list(LedgerEvent.objects.values_list("event_id", flat=True))
    assert sorted(str(e) for e in ledger) == sorted(accepted)
    for wallet in PlayerWallet.objects.all():
        total = LedgerEvent.objects.filter(player_id=wallet.player_id).aggregate(s=Sum("amount"))["s"] or 0
        assert wallet.xp_total == total
    assert verification.wallet_verify() == []


def flush_process(env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"mysql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}/{db['NAME']}",
        "MEMORA_REDIS_KEY_PREFIX": django_settings.MEMORA_REDIS_KEY_PREFIX,
        "DJANGO_DEBUG": "1",
        "DJANGO_SECURE": "0",
        **env_extra,
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "sync_wallets", "--no-progress"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(predicate, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_flush_killed_between_commit_and_release_then_rerun(redis_namespace):
    players = PlayerFactory.create_batch(25)
    accepted = accepted_events(players, 3)
    lease = 15
    proc = flush_process(
        {"MEMORA_FLUSH_CHUNK": "10", "MEMORA_FLUSH_BARRIER_AFTER_CHUNK": "2", "MEMORA_FLUSH_LEASE": str(lease)}
    )
    try:
        redis = hotstate.connection()
        wait_for(lambda: redis.get(f"{redis_namespace}:barrier:reached") == b"2" or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Two chunks of 10 students are in the ledger; the second one's claims are held by the dead flush.
    assert LedgerEvent.objects.count() == 20 * 3
    # A live claim is never touched: a rerun now leaves those students alone...
    flush.wallet_flush(trigger="manual")
    assert LedgerEvent.objects.count() == 75
    # ...and once the dead flush's lease has expired (by Redis's clock), the adopter finds them
    # already written.
    leases = [float(redis.hget(cache.inflight_meta_key(p.pk), "lease") or 0) for p in players]
    assert max(leases) > 0

    def redis_now() -> float:
        seconds, micros = redis.time()
        return seconds + micros / 1e6

    wait_for(lambda: redis_now() > max(leases), limit=lease + 60)
    flush.wallet_flush(trigger="manual")
    for profile in players:
        assert not redis.exists(cache.inflight_key(profile.pk))
    assert_exactly_once(accepted)


def test_manual_flush_racing_the_beat_flush_with_awards_arriving(settings):
    settings.MEMORA_FLUSH_CHUNK = 5
    players = PlayerFactory.create_batch(30)
    accepted = accepted_events(players, 2)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(fn) -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def awards() -> None:
        for profile in players[::3]:
            outcome = award(profile.pk)
            with lock:
                accepted[outcome.body["event_id"]] = profile.pk

    threads = [
        threading.Thread(target=run, args=(lambda: flush.wallet_flush(trigger="beat"),)),
        threading.Thread(target=run, args=(lambda: flush.wallet_flush(trigger="manual"),)),
        threading.Thread(target=run, args=(awards,)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    flush.wallet_flush(trigger="manual")
    assert_exactly_once(accepted)


def test_database_error_mid_run_then_retry(settings):
    settings.MEMORA_FLUSH_CHUNK = 10
    players = PlayerFactory.create_batch(30)
    accepted = accepted_events(players, 2)

    def break_connection(chunks: int) -> None:
        if chunks == 1:
            # The server drops our connection mid-run: the next chunk's statements fail.
            victim = connection.connection.thread_id()
            db = connection.settings_dict
            killer = MySQLdb.connect(host=db["HOST"] or "127.0.0.1", port=int(db["PORT"] or 3306), user=db["USER"])
            try:
                killer.cursor().execute(f"KILL {int(victim)}")
            finally:
                killer.close()

    with pytest.raises(OperationalError):
        flush.wallet_flush(trigger="beat", after_chunk=break_connection)
    with contextlib.suppress(Exception):
        connection.close()
    assert 0 < LedgerEvent.objects.count() < 60
    flush.wallet_flush(trigger="beat")
    assert_exactly_once(accepted)


def test_a_bad_event_is_dead_lettered_without_blocking_anyone():
    players = PlayerFactory.create_batch(4)
    accepted = accepted_events(players, 2)
    bad = players[1]
    redis = hotstate.connection()
    redis.rpush(cache.pending_key(bad.pk), "{not json")
    summary = flush.wallet_flush(trigger="manual")
    assert summary.dead_lettered == 1
    # Every good event is written, the bad student's included; nothing is left in flight.
    assert sorted(str(e) for e in LedgerEvent.objects.values_list("event_id", flat=True)) == sorted(accepted)
    assert not redis.exists(cache.inflight_key(bad.pk))
    letter = DeadLetter.objects.get()
    assert (letter.player_id, letter.payload, letter.resolved_at) == (bad.pk, "{not json", None)
    assert "undecodable" in letter.error
    # The next run finds nothing to do: the student's flush is not jammed.
    assert flush.wallet_flush(trigger="manual").events == 0


def test_a_key_counted_on_both_paths_is_flushed_once(settings):
    """Redis came back stale and a retry of a key already counted on the database path slipped
    through: the flush finds the pair in the ledger, drops the event and rebuilds the student."""
    profile = PlayerFactory()
    award(profile.pk, amount=5, key="warm")  # the student's Redis wallet exists
    settings.MEMORA_HOT_STATE = "database"
    first = award(profile.pk, amount=7, key="twice")
    assert first.path == "database"
    settings.MEMORA_HOT_STATE = "redis"
    cache.stale_players.clear()  # another process: it never saw the failed rebuild
    # The stale Redis knows nothing of that key (the reconciler has not run).
    redis = hotstate.connection()
    for key in redis.scan_iter(match=f"{django_settings.MEMORA_REDIS_KEY_PREFIX}:*idem*"):
        redis.delete(key)
    second = award(profile.pk, amount=7, key="twice")
    assert second.path == "cache" and not second.replayed
    summary = flush.wallet_flush(trigger="manual")
    assert summary.duplicates == 1
    amounts = sorted(LedgerEvent.objects.filter(player_id=profile.pk).values_list("amount", flat=True))
    assert amounts == [5, 7]
    wallet = PlayerWallet.objects.get(player_id=profile.pk)
    assert wallet.xp_total == 12
    assert verification.wallet_verify(player_ids=[profile.pk]) == []
    # The student's Redis copy was rebuilt from the database: it shows 12, not 19.
    assert sync.wallet_read(player_id=profile.pk, today=timezone.now().date())["xp_total"] == 12
