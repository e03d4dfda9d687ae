"""Access to the hot state in Redis: short timeouts, a circuit breaker and error classification.

Callers wrap every Redis use in :func:`call`. It raises :class:`RedisUnavailable` whose
``certainly_not_run`` tells a writer whether it may take the database path (Redis certainly did not
run the command) or must answer 503 (a timeout after the command was sent).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis
from django.conf import settings
from django_redis import get_redis_connection
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from core.redisconn import SCRIPTS, IdentityConnection, register_script

T = TypeVar("T")
logger = logging.getLogger(__name__)

# Replies by which Redis refused a command without running it. An unflagged script refused on OOM
# or READONLY has written nothing: Redis refuses at its first write (OOM only then, READONLY at
# every write). In a pipeline the commands before the refused one may have run; its callers (the
# flush's claims and releases) leave a state the next run adopts. redis-py 8 raises these classes
# and strips the reply's prefix from the message; MasterDownError is a ClusterDownError,
# BusyLoadingError a ConnectionError; EXECABORT means a whole MULTI was discarded.
_REJECTION_CLASSES: tuple[type[Exception], ...] = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.NoScriptError,
    redis.exceptions.ExecAbortError,
)
# The fallback for a client that keeps the prefix; BUSY (a script running too long) has no class.
_CERTAIN_REJECTIONS = ("OOM", "READONLY", "BUSY", "LOADING", "MASTERDOWN")
# What redis-py's Sentinel connection raises in place of READONLY from a demoted master.
_DEMOTED_MASTER = "The previous master is now a slave"


class RedisUnavailable(Exception):
    def __init__(self, reason: str, *, certainly_not_run: bool) -> None:
        super().__init__(reason)
        self.certainly_not_run = certainly_not_run


class CircuitBreaker:
    """Opens after ``failures`` consecutive errors; lets one trial call through every ``reset`` s."""

    def __init__(self, failures: int, reset_seconds: float) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._lock = threading.Lock()
        self._consecutive = 0
        self._open_until = 0.0

    def allow(self) -> bool:
        with self._lock:
            if self._consecutive < self.failures:
                return True
            now = time.monotonic()
            if now >= self._open_until:
                # Half open: this caller is the trial; the others keep failing fast meanwhile.
                self._open_until = now + self.reset_seconds
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._open_until = 0.0

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self._consecutive >= self.failures:
                self._open_until = time.monotonic() + self.reset_seconds

    @property
    def failing(self) -> bool:
        with self._lock:
            return self._consecutive > 0

    def reset(self) -> None:
        self.record_success()


breaker = CircuitBreaker(settings.MEMORA_BREAKER_FAILURES, settings.MEMORA_BREAKER_RESET_SECONDS)
_recovery_listeners: list[Callable[[], None]] = []


def on_recovery(listener: Callable[[], None]) -> None:
    """Run ``listener`` whenever Redis answers again after a failure, before the call that found
    it answering goes on (so it must be quick: the outbox reconciler is one indexed query when
    there is nothing to do)."""
    _recovery_listeners.append(listener)


def database_only() -> bool:
    return bool(settings.MEMORA_HOT_STATE == "database")


_clients: dict[str, Any] = {}


def _cluster(url: str) -> RedisCluster:
    """A Redis Cluster client (django-redis has none): identity connections on every node and no
    retries — a retry re-sends a command that may have run (a redirect, MOVED or ASK, is followed:
    the node that answers it has run nothing)."""
    options = settings.CACHES["default"].get("OPTIONS", {})
    return RedisCluster.from_url(
        url,
        connection_class=IdentityConnection,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=options.get("SOCKET_TIMEOUT", settings.MEMORA_REDIS_TIMEOUT),
        socket_connect_timeout=options.get("SOCKET_CONNECT_TIMEOUT", settings.MEMORA_REDIS_TIMEOUT),
        max_connections=options.get("CONNECTION_POOL_KWARGS", {}).get("max_connections", 64),
        # A node that is down fails its own slots only; the others keep serving.
        require_full_coverage=False,
    )


def connection() -> Any:
    """The hot-state client, remembered per location (it is looked up on every hot-path call; the
    location changes only when tests point the app elsewhere): django-redis's client for the
    default cache (one Redis, or the master a Sentinel names), or a ``RedisCluster`` with
    ``MEMORA_REDIS_CLUSTER``. Building a Cluster client connects: it may raise a Redis error."""
    location = settings.CACHES["default"]["LOCATION"]
    key = f"cluster:{location}" if settings.MEMORA_REDIS_CLUSTER else location
    client = _clients.get(key)
    if client is None:
        built = _cluster(location) if settings.MEMORA_REDIS_CLUSTER else get_redis_connection("default")
        client = _clients[key] = built
    return client


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def forget_clients() -> None:
    """Close and forget every remembered client (tests that switch topologies)."""
    for client in _clients.values():
        with contextlib.suppress(Exception):  # a client of a server already stopped
            client.close()
    _clients.clear()


def is_rejection(exc: Exception) -> bool:
    """Redis answered and refused the command: it certainly did not run."""
    if isinstance(exc, _REJECTION_CLASSES):
        return True
    if isinstance(exc, redis.ConnectionError) and (
        isinstance(exc.__context__, redis.exceptions.ReadOnlyError) or str(exc) == _DEMOTED_MASTER
    ):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).split(" ", 1)[0] in _CERTAIN_REJECTIONS


def classify(exc: Exception) -> RedisUnavailable:
    message = str(exc)
    if is_rejection(exc):
        return RedisUnavailable(f"{type(exc).__name__}: {message}", certainly_not_run=True)
    if isinstance(exc, redis.ResponseError):
        return RedisUnavailable(message, certainly_not_run=False)
    if isinstance(exc, redis.TimeoutError):
        return RedisUnavailable(message, certainly_not_run="connecting" in message.lower())
    if isinstance(exc, redis.ConnectionError):
        # redis-py says "Error 111 connecting to host:port" when the connect itself failed.
        return RedisUnavailable(message, certainly_not_run="connecting to" in message.lower())
    return RedisUnavailable(message, certainly_not_run=False)


def call(fn: Callable[[Any], T]) -> T:
    """Run ``fn`` against Redis through the breaker; map any Redis failure onto RedisUnavailable.

    After a failure, the first call that finds Redis answering (a PING) runs the recovery
    listeners before its own command: Redis may be back from an old AOF file or empty, and the
    outbox reconciler must rebuild what changed meanwhile before this process trusts it again.

    NOSCRIPT (a ``SCRIPT FLUSH``, or a node that joined after the connect-time load) ran nothing:
    every script is loaded on every node and ``fn`` runs once more. The pipelines that hold scripts
    (the flush's claims and releases) may run again whole: they are idempotent for their claim id.
    """
    if database_only():
        raise RedisUnavailable("MEMORA_HOT_STATE=database", certainly_not_run=True)
    if not breaker.allow():
        raise RedisUnavailable("circuit breaker open", certainly_not_run=True)
    try:
        client = connection()
    except (redis.RedisError, OSError) as exc:
        # Building a Cluster client asks a node for the slot map: nothing of ours was sent.
        breaker.record_failure()
        raise RedisUnavailable(f"{type(exc).__name__}: {exc}", certainly_not_run=True) from exc
    if breaker.failing:
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            breaker.record_failure()
            # Only the PING was sent: the caller's command certainly did not run.
            raise RedisUnavailable(str(exc), certainly_not_run=True) from exc
        breaker.record_success()
        _recover()
    for attempt in (1, 2):
        try:
            result = fn(client)
        except redis.exceptions.NoScriptError as exc:
            if attempt == 1:
                try:
                    load_scripts(client)
                except (redis.RedisError, OSError) as load_exc:
                    breaker.record_failure()
                    raise classify(load_exc) from load_exc
                continue
            breaker.record_failure()
            raise classify(exc) from exc
        except redis.ResponseError as exc:
            error = classify(exc)
            if error.certainly_not_run:
                breaker.record_failure()
                raise error from exc
            # A script error or a wrong type is a bug, not an outage.
            raise
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            breaker.record_failure()
            raise classify(exc) from exc
        except RedisClusterException as exc:
            # The Cluster client found no node for a slot (its map is being rebuilt): not sent.
            breaker.record_failure()
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}", certainly_not_run=True) from exc
        breaker.record_success()
        return result
    raise AssertionError("unreachable")


def load_scripts(client: Any) -> None:
    """Load every registered script on the client's server (on every primary of a Cluster)."""
    for source in list(SCRIPTS.values()):
        client.script_load(source)


def _recover() -> None:
    for listener in list(_recovery_listeners):
        try:
            listener()
        except Exception:  # the database may be away too: the reconciler thread tries again
            logger.warning("recovery listener failed", exc_info=True)


def shard_of(player_id: int) -> int:
    return player_id % settings.MEMORA_REDIS_SHARDS


def shard_prefix(shard: int) -> str:
    """Every key of one shard shares the hash tag, so a Lua call touches one Redis Cluster slot."""
    return f"{settings.MEMORA_REDIS_KEY_PREFIX}:{{s:{shard}}}:"


def player_prefix(player_id: int) -> str:
    return shard_prefix(shard_of(player_id))


def delete_keys(keys: list[str]) -> None:
    """Delete keys in one pipeline (no transaction: each key stands alone). Raises RedisUnavailable."""

    def run(r: redis.Redis) -> None:
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.delete(key)
        pipe.execute()

    if keys:
        call(run)


_FRAGMENTS = Path(__file__).resolve().parent / "lua"


def lua_arguments(names: tuple[str, ...]) -> str:
    """The Lua prelude that names a script's fixed ARGV: one spec gives the positions to the script
    and to its Python caller (:meth:`LuaScript.argv`), so no position is written twice."""
    if not names:
        return ""
    return "local " + ", ".join(names) + " = " + ", ".join(f"ARGV[{i}]" for i in range(1, len(names) + 1)) + "\n"


def shard_groups(shards: Sequence[int]) -> list[list[int]]:
    """The shards grouped by the node that holds them (one group on a single Redis), so a walk
    over every shard sends each pipeline to one node. Raises RedisUnavailable."""

    def group(client: Any) -> list[list[int]]:
        if not is_cluster(client):
            return [list(shards)]
        by_node: dict[str, list[int]] = {}
        for shard in shards:
            slot = client.keyslot(shard_prefix(shard))
            try:
                name = client.nodes_manager.get_node_from_slot(slot).name
            except RedisClusterException:
                name = ""  # not covered now: its own group, which meets the error alone
            by_node.setdefault(name, []).append(shard)
        return list(by_node.values())

    return call(group)


def primaries(client: Any) -> list[tuple[str, Any]]:
    """(name, client) of every primary: the one server, or each master node of a Cluster."""
    if not is_cluster(client):
        return [("default", client)]
    return [(node.name, client.get_redis_connection(node)) for node in client.get_primaries()]


class LuaScript:
    """A Lua script run with EVALSHA, on a client or a pipeline (a Cluster's too). Every script is
    loaded when a connection connects; a NOSCRIPT is handled by :func:`call`."""

    def __init__(self, source: str, args: tuple[str, ...] = ()) -> None:
        self.source = source
        self.args = args
        self.sha = register_script(source)

    @classmethod
    def load(
        cls, module_file: str, name: str, *, args: tuple[str, ...] = (), fragments: tuple[str, ...] = ()
    ) -> LuaScript:
        """``<the module's app>/lua/<name>.lua``, after the kernel's ``fragments`` (shared functions,
        from ``memora_project/lua``) and the prelude naming ``args``."""
        body = (Path(module_file).resolve().parent / "lua" / f"{name}.lua").read_text()
        shared = "".join((_FRAGMENTS / f"{fragment}.lua").read_text() for fragment in fragments)
        return cls(shared + lua_arguments(args) + body, args)

    def argv(self, values: dict[str, Any], *rest: Any) -> list[Any]:
        """The ARGV of one call: the named arguments in the spec's order, then ``rest``."""
        return [values[name] for name in self.args] + list(rest)

    def __call__(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        # Through execute_command: a ClusterPipeline blocks its evalsha() method, not the command
        # (routed by its keys, which share one slot).
        return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
