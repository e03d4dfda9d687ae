"""Prometheus metrics recorded in process memory (no Redis or database call on the request path).

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` makes prometheus-client share the figures of every
worker through files; figures that live in Redis or the database (pending events, flush lag, the
outbox) are read at scrape time by ``/metrics``.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.registry import Collector

VERIFY_SECONDS = Histogram(
    "memora_verify_seconds",
    "Time of the device + session check per request.",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
VERIFY_TOTAL = Counter("memora_verify_total", "Device + session checks by the path that answered.", ["path"])
AWARDS_TOTAL = Counter("memora_awards_total", "Awards accepted (new, not replays) by path.", ["path"])
WALLET_WRITES_AVOIDED = Counter(
    "memora_wallet_writes_avoided_total",
    "Wallet row writes the write-behind saved: events flushed minus wallet rows written.",
)
FLUSH_SECONDS = Histogram(
    "memora_flush_duration_seconds",
    "Duration of a wallet flush.",
    buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
DEAD_LETTERS = Counter(
    "memora_dead_letters_total", "Accepted events the database refused, set aside in the dead-letter table."
)
FLUSH_DROPPED_DELETED = Counter(
    "memora_flush_dropped_deleted_total", "Pending events dropped because their student was deleted."
)
RATE_LIMITED = Counter("memora_rate_limited_total", "Requests refused by a rate limit, by scope.", ["scope"])

# Labels known in advance are exported at 0 from the start, so that rate() works at once and an
# alert on a series that has not happened yet is not silently absent; the hot paths use these bound
# children (a label lookup per request costs more than the increment).
VERIFY_CACHE = VERIFY_TOTAL.labels(path="cache")
VERIFY_DATABASE = VERIFY_TOTAL.labels(path="database")
AWARDS_CACHE = AWARDS_TOTAL.labels(path="cache")
AWARDS_DATABASE = AWARDS_TOTAL.labels(path="database")
# Every scope that core.errors.rate_limited is called with.
RATE_LIMIT_SCOPES = (
    "login_ip",
    "login_lockout",
    "register_ip",
    "lessons_player",
    "lessons_per_day",
    "service_key",
    "unknown_credentials",
    "other",
)
for _scope in RATE_LIMIT_SCOPES:
    RATE_LIMITED.labels(scope=_scope)


def exposition(extra: Collector | None = None) -> bytes:
    """The Prometheus text of this process (or of every gunicorn worker), plus ``extra``."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        text = generate_latest(REGISTRY)
    if extra is not None:
        scrape = CollectorRegistry()
        scrape.register(extra)
        text += generate_latest(scrape)
    return text
