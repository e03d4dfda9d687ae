"""Access to the hot state in Redis: short timeouts, a circuit breaker and error classification.

Callers wrap every Redis use in :func:`call`. It raises :class:`RedisUnavailable` whose
``certainly_not_run`` tells a writer whether it may take the database path (Redis certainly did not
run the command) or must answer 503 (a timeout after the command was sent).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis
from django.conf import settings
from django_redis import get_redis_connection

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


_clients: dict[str, redis.Redis] = {}


def connection() -> redis.Redis:
    """django-redis's client for the default cache, remembered per location (it is looked up on
    every hot-path call; the location changes only when tests point the app elsewhere)."""
    location = settings.CACHES["default"]["LOCATION"]
    client = _clients.get(location)
    if client is None:
        client = _clients[location] = get_redis_connection("default")
    return client


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


def call(fn: Callable[[redis.Redis], T]) -> T:
    """Run ``fn`` against Redis through the breaker; map any Redis failure onto RedisUnavailable.

    After a failure, the first call that finds Redis answering (a PING) runs the recovery
    listeners before its own command: Redis may be back from an old AOF file or empty, and the
    outbox reconciler must rebuild what changed meanwhile before this process trusts it again.
    """
    if database_only():
        raise RedisUnavailable("MEMORA_HOT_STATE=database", certainly_not_run=True)
    if not breaker.allow():
        raise RedisUnavailable("circuit breaker open", certainly_not_run=True)
    client = connection()
    if breaker.failing:
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            breaker.record_failure()
            # Only the PING was sent: the caller's command certainly did not run.
            raise RedisUnavailable(str(exc), certainly_not_run=True) from exc
        breaker.record_success()
        _recover()
    try:
        result = fn(client)
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
    breaker.record_success()
    return result


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


class LuaScript:
    """A Lua script run with EVALSHA (loaded on the first NOSCRIPT); works on pipelines too."""

    def __init__(self, source: str, args: tuple[str, ...] = ()) -> None:
        self.source = source
        self.args = args
        self._script: Any = None

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
        if self._script is None:
            self._script = client.register_script(self.source)
        return self._script(keys=keys, args=args, client=client)
