"""The identity half's Redis keys and Lua scripts.

One hash per student, ``mem:{s:<shard>}:auth:<player_id>``, holds the live session, tombstones of
recently ended sessions (``t:<digest>`` → ``code|reason``), the active device ids, the profile's
timezone and the generation it was built from. One Lua call checks a request.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from core import hotstate
from core.redisconn import IDENTITY

# Students whose copy this process could not update (Redis refused or was away): until a rebuild
# succeeds, this process asks the database for them, so a Redis that accepts writes again never
# answers from the copy that missed the change (other processes: the reconciler, within a second).
stale_players: set[int] = set()


def auth_key(player_id: int) -> str:
    return f"{hotstate.player_prefix(player_id)}auth:{player_id}"


def unknown_key(player_id: int, token_digest: str) -> str:
    """A token digest the database did not know, remembered 60 s (statement 14)."""
    return f"{hotstate.player_prefix(player_id)}unk:{token_digest}"


UNKNOWN_TTL = 60


def seen_key(shard: int) -> str:
    """Students of one shard whose last_seen_at is due to be written to the database."""
    return f"{hotstate.shard_prefix(shard)}seen"


check_script = hotstate.LuaScript.load(
    __file__, "check", args=("digest", "device_id", "now", "idle", "write_interval", "player_id", "identity")
)
write_script = hotstate.LuaScript.load(__file__, "write", args=("generation", "ttl", "fields_json", "identity"))


def check(
    *, player_id: int, token_digest: str, device_id: str, now: float, idle: int, write_interval: int
) -> list[Any]:
    """One round trip; raises RedisUnavailable."""
    keys = [auth_key(player_id), seen_key(hotstate.shard_of(player_id)), unknown_key(player_id, token_digest)]
    args = check_script.argv(
        {
            "digest": token_digest,
            "device_id": device_id,
            "now": repr(now),
            "idle": idle,
            "write_interval": write_interval,
            "player_id": player_id,
            "identity": IDENTITY,
        }
    )
    result = hotstate.call(lambda r: check_script(r, keys, args))
    return [v.decode() if isinstance(v, bytes) else v for v in result]


def write(*, player_id: int, generation: int, ttl: int, fields: dict[str, Any]) -> bool:
    """Replace the student's copy unless Redis holds a newer generation; raises RedisUnavailable."""
    payload = json.dumps(fields)
    return bool(
        hotstate.call(
            lambda r: write_script(
                r,
                [auth_key(player_id)],
                write_script.argv({"generation": generation, "ttl": ttl, "fields_json": payload, "identity": IDENTITY}),
            )
        )
    )


def remember_unknown(*, player_id: int, token_digest: str) -> None:
    """Raises RedisUnavailable."""
    hotstate.call(lambda r: r.set(unknown_key(player_id, token_digest), IDENTITY, ex=UNKNOWN_TTL))


def forget_many(player_ids: list[int]) -> None:
    """Drop the students' copies (one pipeline): they are rebuilt from the database on next use.
    Raises RedisUnavailable."""

    hotstate.delete_keys([auth_key(pid) for pid in player_ids])


def forget(*, player_id: int) -> None:
    """Drop the student's copy (the student was deleted); raises RedisUnavailable."""
    hotstate.call(lambda r: r.delete(auth_key(player_id)))


def pop_seen(shards: range, batch: int) -> dict[int, list[int]]:
    """Take up to ``batch`` due students from each shard's seen set."""

    def run(r: redis.Redis) -> list[Any]:
        pipe = r.pipeline(transaction=False)
        for shard in shards:
            pipe.spop(seen_key(shard), batch)
        return pipe.execute()  # type: ignore[no-any-return]

    popped = hotstate.call(run)
    return {shard: [int(x) for x in (members or [])] for shard, members in zip(shards, popped, strict=True)}


def read_seen(player_ids: list[int]) -> list[tuple[int, str | None, str | None]]:
    """(player_id, session id, last seen epoch) for each student."""

    def run(r: redis.Redis) -> list[Any]:
        pipe = r.pipeline(transaction=False)
        for pid in player_ids:
            pipe.hmget(auth_key(pid), "sid", "seen")
        return pipe.execute()  # type: ignore[no-any-return]

    rows = hotstate.call(run)
    out = []
    for pid, (sid, seen) in zip(player_ids, rows, strict=True):
        out.append((pid, sid.decode() if sid else None, seen.decode() if seen else None))
    return out
