"""Fixtures that point the app at a Sentinel set or a Redis Cluster of its own (DESIGN v3, "Beyond
one machine"): started on free loopback ports, stopped by PID, never the shared Redis.

``topology`` is parametrised over single / sentinel / cluster; a test that takes it runs against
each. The Cluster and the Sentinel set are shared by a module's tests (each test has its own key
prefix); a test that kills a server starts its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import hotstate
from memora.tests.redisproc import ClusterProcesses, SentinelSet
from memora_project.settings import redis_cache

# Seconds: a busy 2-core machine must not turn a slow answer into a failure.
GENEROUS = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: Any) -> Iterator[ClusterProcesses]:
    servers = ClusterProcesses(Path(tmp_path_factory.mktemp("cluster")))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def sentinel_set(tmp_path_factory: Any) -> Iterator[SentinelSet]:
    servers = SentinelSet(Path(tmp_path_factory.mktemp("sentinel")))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


class Pointer:
    """Points the app's hot state at one topology and back (the settings and hotstate's
    remembered clients)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.original = (settings.CACHES, settings.MEMORA_REDIS_CLUSTER)

    def _apply(self, caches: dict[str, Any], cluster: bool) -> None:
        hotstate.forget_clients()
        self.settings.CACHES = caches
        self.settings.MEMORA_REDIS_CLUSTER = cluster
        hotstate.breaker.reset()

    def sentinel(self, servers: SentinelSet, timeout: float = GENEROUS) -> None:
        location = f"redis://{servers.service}/0"
        self._apply({"default": redis_cache(location, sentinels=servers.addresses, timeout=timeout)}, False)

    def cluster(self, servers: ClusterProcesses, timeout: float = GENEROUS) -> None:
        self._apply({"default": redis_cache(servers.url, timeout=timeout)}, True)

    def single(self, url: str, timeout: float = GENEROUS) -> None:
        self._apply({"default": redis_cache(url, timeout=timeout)}, False)

    def drop_keys(self) -> None:
        """Delete this test's keys wherever the app points now (every node of a Cluster)."""
        prefix = self.settings.MEMORA_REDIS_KEY_PREFIX
        with contextlib.suppress(Exception):  # the servers may be stopped already
            client = hotstate.connection()
            for key in list(client.scan_iter(match=f"{prefix}:*", count=5000)):
                client.delete(key)

    def restore(self) -> None:
        self.drop_keys()
        self._apply(*self.original)


@pytest.fixture
def pointer(settings: Any) -> Iterator[Pointer]:
    point = Pointer(settings)
    yield point
    point.restore()


@pytest.fixture(params=["single", "sentinel", "cluster"])
def topology(request: Any, pointer: Pointer) -> str:
    """The app on the shared single Redis, a Sentinel set, or a 3-master Cluster."""
    if request.param == "sentinel":
        pointer.sentinel(request.getfixturevalue("sentinel_set"))
    elif request.param == "cluster":
        pointer.cluster(request.getfixturevalue("cluster"))
    return str(request.param)
