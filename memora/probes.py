"""Probes for the load balancer and the operator: /healthz, /readyz, /status."""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from core import clientip, hotstate
from core import metrics as memora_metrics
from devices.models import CacheOutbox
from wallets import cache as wallet_cache
from wallets import selectors as wallet_selectors
from wallets.models import FlushRun, WalletOutbox

_migrations_ok = False
# The classic text format that generate_latest writes (and that CONTRACT.md names).
PROMETHEUS_TEXT = CONTENT_TYPE_PLAIN_0_0_4
logger = logging.getLogger(__name__)


def _database_ok() -> bool:
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def _migrated() -> bool:
    """True once every migration is applied (remembered: migrations do not un-apply themselves)."""
    global _migrations_ok
    if not _migrations_ok:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        _migrations_ok = not executor.migration_plan(executor.loader.graph.leaf_nodes())
    return _migrations_ok


def _redis_info() -> dict[str, Any] | None:
    """Each primary's eviction policy and persistence (one server, or every master of a Cluster);
    None when Redis is unreachable."""
    try:

        def read(r: Any) -> list[tuple[str, Any, Any]]:
            found = []
            for name, node in hotstate.primaries(r):
                pipe = node.pipeline(transaction=False)
                pipe.config_get("maxmemory-policy")
                pipe.info("persistence")
                policy, persistence = pipe.execute()
                found.append((name, policy, persistence))
            return found

        nodes = hotstate.call(read)
    except hotstate.RedisUnavailable:
        return None
    except Exception:
        # CONFIG may be renamed away on a managed Redis: reachable, settings unknown.
        return {"maxmemory_policy": "unknown", "aof": None}
    per_node = {
        name: {
            "maxmemory_policy": (policy or {}).get("maxmemory-policy", "unknown"),
            "aof": bool(int((persistence or {}).get("aof_enabled", 0))),
        }
        for name, policy, persistence in nodes
    }
    policies = {node["maxmemory_policy"] for node in per_node.values()}
    info: dict[str, Any] = {
        # The one policy every node shares, or the first that differs from noeviction.
        "maxmemory_policy": policies.pop() if len(policies) == 1 else sorted(policies - {"noeviction"})[0],
        "aof": all(node["aof"] for node in per_node.values()),
    }
    if len(per_node) > 1 or "default" not in per_node:
        info["nodes"] = per_node
    return info


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    database = _database_ok()
    redis_up = _redis_info() is not None
    if database:
        try:
            _migrated()
        except Exception:
            logger.warning("migration check failed", exc_info=True)
    # Each store's outage has its fallback: ready while at least one serves (the migration state
    # is remembered from when the database last answered).
    ready = _migrations_ok and (database or redis_up)
    body = {"status": "ready" if ready else "unavailable", "database": database, "redis": redis_up}
    return JsonResponse(body, status=200 if ready else 503)


def _authorized(request: HttpRequest) -> bool:
    token = settings.MEMORA_METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    return bool(token) and hmac.compare_digest(header.encode(), f"Bearer {token}".encode())


def status(request: HttpRequest) -> JsonResponse:
    if not _authorized(request):
        return JsonResponse({"code": "not_authenticated", "detail": "The metrics token is required."}, status=401)
    checks: dict[str, dict[str, Any]] = {}
    database = _database_ok()
    checks["database"] = {"ok": database}
    info = _redis_info()
    if info is None:
        checks["redis"] = {"ok": False, "reachable": False}
    else:
        safe_policy = info["maxmemory_policy"] == "noeviction"
        redis_check: dict[str, Any] = {"ok": safe_policy, "reachable": True, **info}
        notes = []
        if not safe_policy:
            notes.append("evicting policy: hot state may be dropped")
        if not info["aof"]:
            notes.append("no persistence: unflushed events are lost if Redis restarts")
        if notes:
            redis_check["note"] = "; ".join(notes)
        checks["redis"] = redis_check
    if database:
        outbox = CacheOutbox.objects.values("player_id").distinct().count()
        outbox += WalletOutbox.objects.values("player_id").distinct().count()
        checks["outbox"] = {"ok": outbox == 0, "students": outbox}
    else:
        checks["outbox"] = {"ok": False, "students": None}
    # Accepted events the database refused: support retries or discards each one.
    letters = wallet_selectors.dead_letter_open_count() if database else None
    checks["dead_letters"] = {"ok": letters == 0, "count": letters}
    # The write-behind: events at risk if Redis died now, and how far the flush lags.
    lag_bound = 15 * 60
    now = time.time()
    try:
        pending, oldest = wallet_cache.pending_stats(range(settings.MEMORA_REDIS_SHARDS))
    except hotstate.RedisUnavailable:
        checks["pending_events"] = {"ok": False, "count": None}
        checks["oldest_unflushed_event_age_s"] = {"ok": False, "value": None}
    else:
        checks["pending_events"] = {"ok": True, "count": pending}
        age = None if oldest is None else round(now - oldest)
        checks["oldest_unflushed_event_age_s"] = {"ok": age is None or age < lag_bound, "value": age}
    last_flush = (
        FlushRun.objects.order_by("-finished_at").values_list("finished_at", flat=True).first() if database else None
    )
    flush_age = None if last_flush is None else round(now - last_flush.timestamp())
    checks["last_flush_age_s"] = {
        "ok": database and (flush_age is None or flush_age < lag_bound),
        "value": flush_age,
    }
    if info is not None and not settings.MEMORA_TRUSTED_PROXIES and clientip.proxy_flag_set():
        checks["proxy"] = {
            "ok": False,
            "peer": clientip.proxy_flag_peer(),
            "note": "a private or loopback peer sent X-Forwarded-For and MEMORA_TRUSTED_PROXIES is empty: "
            "every client behind that proxy is rate-limited as one address",
        }
    else:
        checks["proxy"] = {"ok": True}
    if database:
        try:
            _migrated()
        except Exception:
            logger.warning("migration check failed", exc_info=True)
    # Each store's outage has its fallback: the process can serve while either one does.
    ready = _migrations_ok and (database or info is not None)
    if not ready:
        return JsonResponse({"status": "unavailable", "checks": checks}, status=503)
    overall = "ok" if all(c["ok"] for c in checks.values()) else "degraded"
    return JsonResponse({"status": overall, "checks": checks})


class ScrapeTimeCollector:
    """Figures that live in Redis or the database, read when Prometheus scrapes."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pending = GaugeMetricFamily(
            "memora_pending_events", "Events accepted in Redis and not yet in the database (at risk if Redis died now)."
        )
        oldest = GaugeMetricFamily(
            "memora_oldest_unflushed_event_age_seconds", "Age of the oldest event not yet in the database."
        )
        try:
            count, first = wallet_cache.pending_stats(range(settings.MEMORA_REDIS_SHARDS))
            pending.add_metric([], count)
            oldest.add_metric([], 0 if first is None else max(time.time() - first, 0))
        except hotstate.RedisUnavailable:
            pass
        yield pending
        yield oldest
        outbox = GaugeMetricFamily("memora_outbox_students", "Students whose Redis copy awaits a rebuild.")
        with contextlib.suppress(DatabaseError):
            outbox.add_metric(
                [],
                CacheOutbox.objects.values("player_id").distinct().count()
                + WalletOutbox.objects.values("player_id").distinct().count(),
            )
        yield outbox
        letters = GaugeMetricFamily(
            "memora_dead_letters_open", "Accepted events the database refused, not yet retried or discarded."
        )
        with contextlib.suppress(DatabaseError):
            letters.add_metric([], wallet_selectors.dead_letter_open_count())
        yield letters


def metrics(request: HttpRequest) -> HttpResponse:
    if not _authorized(request):
        return JsonResponse({"code": "not_authenticated", "detail": "The metrics token is required."}, status=401)
    return HttpResponse(memora_metrics.exposition(ScrapeTimeCollector()), content_type=PROMETHEUS_TEXT)
