"""Fixtures the composition app's fault tests share: pointing the app at another Redis, and the
outbox reconciler running in this process as it does in every web and worker process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core import hotstate
from memora import reconciler

# These tests are about outages (a dead, empty, stale or unreachable Redis), not about slowness:
# the app gets a timeout that a busy 2-core machine cannot hit by chance (refused connections still
# fail at once). A test about a timeout sets its own, against a Redis that certainly holds the reply.
GENEROUS_TIMEOUT = 5.0


@pytest.fixture
def point_redis(settings: Any) -> Iterator[Any]:
    """Point the app's Redis at a URL (a private server, or a closed port for a partition)."""

    def point(url: str, *, timeout: float = GENEROUS_TIMEOUT) -> None:
        caches = dict(settings.CACHES)
        options = {**caches["default"]["OPTIONS"], "SOCKET_TIMEOUT": timeout, "SOCKET_CONNECT_TIMEOUT": timeout}
        caches["default"] = {**caches["default"], "LOCATION": url, "OPTIONS": options}
        settings.CACHES = caches
        hotstate.breaker.reset()

    yield point
    hotstate.breaker.reset()


@pytest.fixture
def running_reconciler(settings: Any) -> Iterator[None]:
    settings.MEMORA_RECONCILER_ENABLED = True
    reconciler.ensure_started()
    yield
    reconciler.stop()
