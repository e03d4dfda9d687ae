"""The flush fanned out over ranges of shards: two workers racing over overlapping ranges while
awards arrive still write every event once; beat's task sends one range task per range (seen on
the real broker, and run eagerly end to end); a range held by another flush is left alone;
``sync_wallets --workers 2`` in a real process."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import signals
from django.db import connection, connections

from core import hotstate
from players.tests.factories import PlayerFactory
from wallets import cache, fanout, flush, tasks
from wallets.models import FlushRun, LedgerEvent
from wallets.tests.test_flush_faults import ROOT, accepted_events, assert_exactly_once, award

pytestmark = [pytest.mark.django_db(transaction=True)]

# The project's Celery app (configured from the settings), reached through the task it runs.
app = tasks.flush_wallets.app


def test_the_ranges_cover_every_shard_once(settings):
    for shards, parts in ((1024, 16), (1024, 3), (1024, 1), (8, 16), (10, 4)):
        settings.MEMORA_REDIS_SHARDS = shards
        ranges = fanout.shard_ranges(parts)
        assert len(ranges) == min(parts, shards)
        assert [s for r in ranges for s in r] == list(range(shards))
        assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


def test_two_workers_racing_over_overlapping_ranges_with_awards_arriving(settings):
    """Worker A walks shards 0-5, worker B shards 2-7 (four shards walked by both), both start
    writing at the same moment, and awards keep arriving: every event once, wallet = ledger."""
    settings.MEMORA_REDIS_SHARDS = 8
    settings.MEMORA_FLUSH_CHUNK = 4
    players = PlayerFactory.create_batch(40)
    assert {hotstate.shard_of(p.pk) for p in players} == set(range(8))
    accepted = accepted_events(players, 2)
    lock = threading.Lock()
    errors: list[BaseException] = []
    both_claimed = threading.Barrier(2, timeout=60)
    summaries: dict[str, flush.FlushSummary] = {}

    def meet(chunk: int) -> None:
        # Both workers hold a claim before either writes: the overlap is real, not sequential.
        if chunk == 1 and threading.current_thread().name in ("A", "B"):
            both_claimed.wait()

    def run(fn: Any) -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def worker(name: str, shards: range) -> None:
        summaries[name] = flush.wallet_flush(shards=shards, trigger="beat")

    def awards() -> None:
        rng = random.Random(15)
        for _ in range(40):
            profile = rng.choice(players)
            outcome = award(profile.pk)
            with lock:
                accepted[outcome.body["event_id"]] = profile.pk

    flush.hooks.before_write = meet
    try:
        threads = [
            threading.Thread(target=run, args=(lambda: worker("A", range(0, 6)),), name="A"),
            threading.Thread(target=run, args=(lambda: worker("B", range(2, 8)),), name="B"),
            threading.Thread(target=run, args=(awards,), name="awards"),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        flush.hooks.before_write = None
    assert not errors, errors
    # Each wrote its share; neither wrote what the other had written.
    assert summaries["A"].events > 0 and summaries["B"].events > 0
    assert summaries["A"].already_written == summaries["B"].already_written == 0
    flush.wallet_flush(trigger="manual")
    assert_exactly_once(accepted)


@pytest.fixture
def private_queue() -> Iterator[str]:
    """The default queue renamed for this test, on the real broker: a worker elsewhere on the
    shared broker never takes these messages, and the test reads them back."""
    name = f"test-fanout-{uuid.uuid4().hex[:10]}"
    before = app.conf.task_default_queue
    app.conf.task_default_queue = name  # created on first use (task_create_missing_queues)
    try:
        yield name
    finally:
        app.conf.task_default_queue = before
        app.amqp.queues.pop(name, None)
        with app.connection_for_write() as conn:
            conn.default_channel.client.delete(name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")


def test_beat_task_sends_one_range_task_per_range_through_the_broker(settings, private_queue):
    settings.MEMORA_FLUSH_FANOUT = 16
    assert tasks.flush_wallets.apply().get() == 16
    sent = []
    with app.connection_for_read() as conn, conn.SimpleQueue(private_queue) as queue:
        while len(sent) < 17:
            try:
                message = queue.get(timeout=1)
            except queue.Empty:
                break
            args, kwargs, _embed = message.decode()
            sent.append((message.headers["task"], tuple(args), kwargs))
            message.ack()
    assert {name for name, _, _ in sent} == {"wallets.tasks.flush_wallet_range"}
    assert len(sent) == 16
    shards = sorted(s for _, (start, stop), _ in sent for s in range(start, stop))
    assert shards == list(range(settings.MEMORA_REDIS_SHARDS))


@pytest.fixture
def eager(settings) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Celery eager (this test is about the fan-out, not the worker); records every task run."""
    ran: list[tuple[str, tuple[Any, ...]]] = []

    def record(sender: Any = None, args: Any = None, **_: Any) -> None:
        ran.append((sender.name, tuple(args or ())))

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    signals.task_prerun.connect(record, weak=False)
    try:
        yield ran
    finally:
        signals.task_prerun.disconnect(record)
        app.conf.task_always_eager = before


def test_beat_task_fans_out_and_flushes_every_range(settings, eager):
    settings.MEMORA_FLUSH_FANOUT = 4
    players = PlayerFactory.create_batch(12)
    accepted = accepted_events(players, 3)
    tasks.flush_wallets.delay()
    assert eager[0] == ("wallets.tasks.flush_wallets", ())
    ranges = [args for name, args in eager if name == "wallets.tasks.flush_wallet_range"]
    assert ranges == [(0, 256), (256, 512), (512, 768), (768, 1024)]
    assert FlushRun.objects.count() == 4
    assert_exactly_once(accepted)
    redis = hotstate.connection()
    assert not any(redis.exists(fanout.range_lock_key(range(a, b))) for a, b in ranges)


def test_a_range_held_by_another_flush_is_left_alone(settings):
    settings.MEMORA_REDIS_SHARDS = 4
    players = PlayerFactory.create_batch(8)
    accepted = accepted_events(players, 1)
    held, free = range(0, 2), range(2, 4)
    redis = hotstate.connection()
    redis.set(fanout.range_lock_key(held), "someone-else", ex=60)
    assert fanout.wallet_flush_range(shards=held) is None
    summary = fanout.wallet_flush_range(shards=free)
    assert summary is not None
    assert summary.events == sum(1 for p in players if hotstate.shard_of(p.pk) in free)
    # Not ours: still there, untouched.
    assert redis.get(fanout.range_lock_key(held)) == b"someone-else"
    redis.delete(fanout.range_lock_key(held))
    assert fanout.wallet_flush_range(shards=held).events == sum(1 for p in players if hotstate.shard_of(p.pk) in held)
    assert not redis.exists(fanout.range_lock_key(held))
    assert_exactly_once(accepted)


def test_sync_wallets_on_two_workers(redis_namespace):
    players = PlayerFactory.create_batch(30)
    accepted = accepted_events(players, 2)
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"mysql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}/{db['NAME']}",
        "MEMORA_REDIS_KEY_PREFIX": redis_namespace,
        "MEMORA_FLUSH_CHUNK": "7",
        "DJANGO_DEBUG": "1",
        "DJANGO_SECURE": "0",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "sync_wallets", "--workers", "2", "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "wrote: 30 students, 60 events" in done.stdout, done.stdout
    assert LedgerEvent.objects.count() == 60
    redis = hotstate.connection()
    assert not any(redis.exists(cache.pending_key(p.pk), cache.inflight_key(p.pk)) for p in players)
    assert_exactly_once(accepted)
