"""The outbox reconciler: students whose Redis copy missed a database-first change.

Every process runs it: a daemon thread checks the outbox once a second (cheap: one indexed
query) and rebuilds the students listed there as soon as Redis answers. ``reconcile_outbox`` is
also a beat task and runs in ``manage.py rebuild_cache``.
"""

from __future__ import annotations

import logging
import os
import threading

from django.conf import settings
from django.db import close_old_connections, connections

from core import hotstate
from devices import cache as device_cache
from devices import services as device_services
from devices.models import CacheOutbox
from wallets import cache as wallet_cache
from wallets import sync as wallet_sync
from wallets.models import WalletOutbox

logger = logging.getLogger(__name__)


def invalidate_outbox_copies(*, batch: int = 5000) -> int:
    """Delete the Redis copy of every student in the outbox (no per-student database read), so a
    long outbox never leaves a stale copy trusted while the rebuilds catch up; the number dropped.
    Raises RedisUnavailable."""
    dropped = 0
    for model, forget in ((CacheOutbox, device_cache.forget_many), (WalletOutbox, wallet_cache.forget_many)):
        last = 0
        while True:
            pids = list(
                model.objects.filter(player_id__gt=last)
                .order_by("player_id")
                .values_list("player_id", flat=True)
                .distinct()[:batch]
            )
            if not pids:
                break
            forget(pids)
            dropped += len(pids)
            last = pids[-1]
    return dropped


def reconcile_outbox(*, limit: int = 500) -> int:
    """Rebuild in Redis every student listed in the outbox; the number rebuilt."""
    done = 0
    player_ids = list(CacheOutbox.objects.values_list("player_id", flat=True).distinct()[:limit])
    for player_id in player_ids:
        if not device_services.auth_cache_sync(player_id=player_id):
            return done  # Redis is away again: the next round continues
        done += 1
    player_ids = list(WalletOutbox.objects.values_list("player_id", flat=True).distinct()[:limit])
    for player_id in player_ids:
        if not wallet_sync.wallet_cache_sync(player_id=player_id):
            return done
        done += 1
    return done


_started_pid: int | None = None
_lock = threading.Lock()
_wake = threading.Event()
_stop = threading.Event()
_thread: threading.Thread | None = None


def _loop() -> None:
    try:
        while not _stop.is_set():
            _wake.wait(settings.MEMORA_RECONCILER_INTERVAL)
            _wake.clear()
            if _stop.is_set():
                break
            try:
                # While Redis is away the breaker lets one trial call through per second: the
                # first rebuild of the round is that trial.
                reconcile_outbox()
            except Exception:  # the thread must survive a database outage
                logger.debug("reconciler round failed", exc_info=True)
            finally:
                close_old_connections()
    finally:
        connections.close_all()


_recovering = threading.local()


def _recover_now() -> None:
    """Redis answers again: rebuild the outbox's students before this process trusts Redis (and
    wake the thread, which keeps going if the outbox is longer than one round)."""
    if getattr(_recovering, "active", False):
        return
    _recovering.active = True
    try:
        # First every copy the outbox names is dropped (whatever the backlog), then the rebuilds
        # start; the thread carries on past this round's limit.
        invalidate_outbox_copies()
        reconcile_outbox()
    finally:
        _recovering.active = False
        _wake.set()


def ensure_started() -> None:
    """Start this process's reconciler once (after a fork, again in the child)."""
    global _started_pid, _thread
    if not settings.MEMORA_RECONCILER_ENABLED or _started_pid == os.getpid():
        return
    with _lock:
        if _started_pid == os.getpid():
            return
        _started_pid = os.getpid()
        _stop.clear()
        _thread = threading.Thread(target=_loop, name="memora-reconciler", daemon=True)
        _thread.start()
        if _recover_now not in hotstate._recovery_listeners:
            hotstate.on_recovery(_recover_now)


def stop() -> None:
    """Stop this process's reconciler and wait for it (tests; a clean shutdown)."""
    global _started_pid, _thread
    with _lock:
        _stop.set()
        _wake.set()
        if _thread is not None:
            _thread.join(timeout=10)
        _thread = None
        _started_pid = None
