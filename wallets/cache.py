"""The rewards half's Redis keys and Lua scripts.

Per student (all under the shard's hash tag, so one Lua call touches one Redis Cluster slot):
``w:<id>`` wallet hash, ``wl:<id>`` lessons done on the wallet's local day, ``pe:<id>`` pending
events (JSON), ``if:<id>`` events claimed by a flush with ``ifm:<id>`` (claim id, lease),
``idem:<digest>`` idempotency records. Per shard: ``dirty`` (students with pending events).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from core import hotstate
from core.redisconn import IDENTITY
from wallets.wallethash import WALLET_HASH_FIELDS, WalletHash

# Students whose wallet this process could not rebuild after a database-first change: it rebuilds
# them (or takes the database path) before trusting their Redis wallet again.
stale_players: set[int] = set()


def wallet_key(pid: int) -> str:
    return f"{hotstate.player_prefix(pid)}w:{pid}"


def lessons_key(pid: int) -> str:
    return f"{hotstate.player_prefix(pid)}wl:{pid}"


def pending_key(pid: int) -> str:
    return f"{hotstate.player_prefix(pid)}pe:{pid}"


def inflight_key(pid: int) -> str:
    return f"{hotstate.player_prefix(pid)}if:{pid}"


def inflight_meta_key(pid: int) -> str:
    return f"{hotstate.player_prefix(pid)}ifm:{pid}"


def idem_key(pid: int, digest: str) -> str:
    return f"{hotstate.player_prefix(pid)}idem:{digest}"


def rate_key(pid: int) -> str:
    return f"{hotstate.player_prefix(pid)}rl:lesson:{pid}"


def day_count_key(pid: int) -> str:
    """Lesson completions on the student's current local day (hash: d = day, n = count)."""
    return f"{hotstate.player_prefix(pid)}rl:lessonday:{pid}"


def dirty_key(shard: int) -> str:
    return f"{hotstate.shard_prefix(shard)}dirty"


# The award script's arguments, by name. `idem` is the request's key digest (hex), `fp` its
# fingerprint digest (32 hex), `spare_ids` comma-separated ids for the freeze events one call may add.
AWARD_ARGS = (
    "now",
    "day",
    "day_ordinal",
    "kind",
    "lesson_id",
    "base",
    "cap",
    "fp",
    "event_id",
    "rate_limit",
    "rate_window_ms",
    "idem_ttl_ms",
    "player_id",
    "reason",
    "idem",
    "freeze_every",
    "freeze_max",
    "spare_ids",
    "actor",
    "identity",
    "per_day",
    "per_day_retry_ms",
)


_award = hotstate.LuaScript.load(__file__, "award", args=AWARD_ARGS, fragments=("window",))
_read = hotstate.LuaScript.load(__file__, "read", args=("identity",))
_rebuild = hotstate.LuaScript.load(
    __file__,
    "rebuild",
    args=("generation", "expected_version", "fields_json", "lessons_json", "idem_ttl_ms", "identity"),
)
_claim = hotstate.LuaScript.load(__file__, "claim", args=("claim_id", "lease_seconds"))
_release = hotstate.LuaScript.load(__file__, "release", args=("claim_id", "mode"))


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def award(*, pid: int, idem_digest: str, values: dict[str, Any]) -> list[Any]:
    args = _award.argv(values)
    keys = [
        wallet_key(pid),
        lessons_key(pid),
        pending_key(pid),
        dirty_key(hotstate.shard_of(pid)),
        idem_key(pid, idem_digest),
        rate_key(pid),
        day_count_key(pid),
    ]
    return [_text(v) for v in hotstate.call(lambda r: _award(r, keys, args))]


def idem_record(*, fp: str, answer: str) -> str:
    """An idempotency record: the request's fingerprint digest and its answer's record
    (``replay.Answer.record``), as the award script writes it. Records written before hold
    ``{fp, status, body}`` instead of ``r``; they are answered as they are."""
    return json.dumps({"fp": fp, "r": answer})


def read_wallet(pid: int) -> WalletHash | None:
    """The wallet hash, or None when it is absent or suspect."""
    argv = _read.argv({"identity": IDENTITY}, *WALLET_HASH_FIELDS)
    values = hotstate.call(lambda r: _read(r, [wallet_key(pid)], argv))
    if not values or values[WALLET_HASH_FIELDS.index("ver")] is None:
        return None
    return WalletHash.from_fields({name: _text(v) or "" for name, v in zip(WALLET_HASH_FIELDS, values, strict=True)})


def forget_many(player_ids: list[int]) -> None:
    """Drop the students' wallet hashes (one pipeline; their pending events stay): each is rebuilt
    from the database and those events on next use. Raises RedisUnavailable."""

    hotstate.delete_keys([wallet_key(pid) for pid in player_ids])


def read_unflushed(pid: int) -> tuple[str | None, list[dict[str, Any]]]:
    """The wallet's version and every event still in Redis (pending and in flight), one round trip."""

    def run(r: redis.Redis) -> list[Any]:
        pipe = r.pipeline(transaction=False)
        pipe.hget(wallet_key(pid), "ver")
        pipe.lrange(inflight_key(pid), 0, -1)
        pipe.lrange(pending_key(pid), 0, -1)
        return pipe.execute()  # type: ignore[no-any-return]

    ver, inflight, pending = hotstate.call(run)
    events: dict[str, dict[str, Any]] = {}
    for raw in [*inflight, *pending]:
        event = json.loads(raw)
        events[event["event_id"]] = event
    return _text(ver), list(events.values())


def rebuild(
    *,
    pid: int,
    generation: int,
    expected_version: str | None,
    fields: WalletHash | Mapping[str, str],
    lessons: list[str],
    idem_records: dict[str, str],
    idem_ttl_ms: int,
) -> int:
    """1 written, 0 refused (newer generation in Redis), -1 raced by an award (read again).
    ``fields``: the wallet hash; a mapping of its stored fields (what bench.flush seeds) is read
    through the codec, so that every write of the hash goes through WalletHash."""
    wallet = fields if isinstance(fields, WalletHash) else WalletHash.from_fields(fields)
    keys = [wallet_key(pid), lessons_key(pid), *(idem_key(pid, d) for d in idem_records)]
    named = {
        "generation": generation,
        "expected_version": expected_version or "",
        "fields_json": json.dumps(wallet.fields()),
        "lessons_json": json.dumps(lessons),
        "idem_ttl_ms": idem_ttl_ms,
        "identity": IDENTITY,
    }
    args = _rebuild.argv(named, *idem_records.values())
    return int(hotstate.call(lambda r: _rebuild(r, keys, args)))


def dirty_members(shards: Sequence[int]) -> dict[int, list[int]]:
    def run(r: redis.Redis) -> list[Any]:
        pipe = r.pipeline(transaction=False)
        for shard in shards:
            pipe.smembers(dirty_key(shard))
        return pipe.execute()  # type: ignore[no-any-return]

    members = hotstate.call(run)
    return {shard: sorted(int(m) for m in found) for shard, found in zip(shards, members, strict=True) if found}


@dataclass(frozen=True)
class Claimed:
    events: list[str]
    adopted: bool  # some events may already be in the ledger (a dead flush wrote them)

    def by_id(self) -> dict[str, str]:
        """The raw events by event id (for a dead letter's payload)."""
        found: dict[str, str] = {}
        for raw in self.events:
            text = _text(raw)
            try:
                found[str(json.loads(text)["event_id"])] = text
            except (ValueError, KeyError, TypeError):
                continue
        return found


def claim(*, claim_id: str, lease_seconds: float, by_shard: dict[int, list[int]]) -> dict[int, Claimed]:
    """Claim the students' events, one Lua call per shard, all in one pipeline."""

    def run(r: redis.Redis) -> list[Any]:
        pipe = r.pipeline(transaction=False)
        for shard, pids in by_shard.items():
            keys = [dirty_key(shard)]
            for pid in pids:
                keys += [pending_key(pid), inflight_key(pid), inflight_meta_key(pid)]
            _claim(pipe, keys, _claim.argv({"claim_id": claim_id, "lease_seconds": repr(float(lease_seconds))}, *pids))
        return pipe.execute()  # type: ignore[no-any-return]

    claimed: dict[int, Claimed] = {}
    for result in hotstate.call(run):
        for i in range(0, len(result), 3):
            claimed[int(result[i])] = Claimed(result[i + 2], result[i + 1] == b"1")
    return claimed


def release(*, claim_id: str, pids: list[int], abandon: bool = False) -> None:
    by_shard: dict[int, list[int]] = {}
    for pid in pids:
        by_shard.setdefault(hotstate.shard_of(pid), []).append(pid)

    def run(r: redis.Redis) -> list[Any]:
        pipe = r.pipeline(transaction=False)
        for shard, shard_pids in by_shard.items():
            keys = [dirty_key(shard)]
            for pid in shard_pids:
                keys += [inflight_key(pid), inflight_meta_key(pid), pending_key(pid)]
            mode = "abandon" if abandon else "release"
            _release(pipe, keys, _release.argv({"claim_id": claim_id, "mode": mode}, *shard_pids))
        return pipe.execute()  # type: ignore[no-any-return]

    hotstate.call(run)


def pending_stats(shards: Sequence[int]) -> tuple[int, float | None]:
    """(events pending or in flight, accepted_at of the oldest), from every shard's dirty set.
    Cost grows with the students awaiting a flush (bounded by the flush interval), not all students."""
    dirty = dirty_members(shards)

    def run(r: redis.Redis) -> list[Any]:
        pipe = r.pipeline(transaction=False)
        for pids in dirty.values():
            for pid in pids:
                for key in (inflight_key(pid), pending_key(pid)):
                    pipe.llen(key)
                    pipe.lindex(key, 0)
        return pipe.execute()  # type: ignore[no-any-return]

    results = hotstate.call(run) if dirty else []
    count = 0
    oldest: float | None = None
    for i in range(0, len(results), 2):
        count += int(results[i] or 0)
        if results[i + 1]:
            accepted = float(json.loads(results[i + 1])["accepted_at"])
            oldest = accepted if oldest is None else min(oldest, accepted)
    return count, oldest
