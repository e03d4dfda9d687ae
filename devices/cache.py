"""The identity half's Redis keys and Lua scripts.

One hash per student, ``mem:{s:<shard>}:auth:<player_id>``, holds the live session, tombstones of
recently ended sessions (``t:<digest>`` → ``code|reason``), the active device ids, the profile's
timezone and the generation it was built from. One Lua call checks a request.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from memora_project import hotstate
from memora_project.redisconn import IDENTITY

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


# KEYS: auth hash, seen set, unknown-digest marker. ARGV: digest, device_id, now, idle timeout,
# last-seen write interval, player id, the server's identity. Order of the design: session state
# (ended > expired) before the device binding. A copy (or an unknown-token marker) stamped by
# another server identity is suspect (Redis may have gone back in time and brought back an ended
# session): the database answers and the copy is rebuilt.
CHECK_LUA = """
local h = KEYS[1]
local st = redis.call('HGET', h, 'st')
if not st then
  if redis.call('GET', KEYS[3]) == ARGV[7] then return {'unknown'} end
  return {'miss'}
end
if st ~= ARGV[7] then return {'miss'} end
local cur = redis.call('HGET', h, 'cur')
if cur == ARGV[1] then
  local f = redis.call('HMGET', h, 'dev', 'expires', 'seen', 'seenw', 'sid', 'started',
                       'dname', 'plat', 'tz', 'tzp', 'tze', 'uid')
  local now = tonumber(ARGV[3])
  if now >= tonumber(f[2]) then return {'expired', 'lifetime'} end
  if now - tonumber(f[3]) >= tonumber(ARGV[4]) then return {'expired', 'idle'} end
  if f[1] ~= ARGV[2] then return {'mismatch'} end
  redis.call('HSET', h, 'seen', ARGV[3])
  if now - tonumber(f[4] or '0') >= tonumber(ARGV[5]) then
    redis.call('HSET', h, 'seenw', ARGV[3])
    redis.call('SADD', KEYS[2], ARGV[6])
  end
  return {'ok', f[5], f[6], f[2], ARGV[3], f[7] or '', f[8] or '',
          f[9] or 'UTC', f[10] or '', f[11] or '', f[12] or '0'}
end
local t = redis.call('HGET', h, 't:' .. ARGV[1])
if t then return {'ended', t} end
if redis.call('HGET', h, 'complete') == '1' then
  -- A copy Redis cannot update (a demoted, read-only Redis) may not know a session started since:
  -- this no-op write fails there with READONLY, and the caller asks the database instead.
  redis.call('HDEL', h, 'probe')
  return {'unknown'}
end
if redis.call('GET', KEYS[3]) == ARGV[7] then return {'unknown'} end
return {'miss'}
"""

# KEYS: auth hash. ARGV: generation, ttl seconds, JSON object of fields, the server's identity (the
# stamp). Refuses to overwrite a copy built from a newer generation; keeps a later last-seen of the
# same session.
WRITE_LUA = """
local gen = tonumber(ARGV[1])
local old = tonumber(redis.call('HGET', KEYS[1], 'gen') or '-1')
if old > gen then return 0 end
local oldsid = redis.call('HGET', KEYS[1], 'sid')
local oldseen = redis.call('HGET', KEYS[1], 'seen')
local oldseenw = redis.call('HGET', KEYS[1], 'seenw')
local d = cjson.decode(ARGV[3])
redis.call('DEL', KEYS[1])
local args = {'gen', ARGV[1], 'complete', '1', 'st', ARGV[4]}
for k, v in pairs(d) do
  args[#args + 1] = k
  args[#args + 1] = tostring(v)
end
redis.call('HSET', KEYS[1], unpack(args))
if oldsid and d['sid'] and tostring(d['sid']) == oldsid and oldseen
   and tonumber(oldseen) > tonumber(d['seen']) then
  redis.call('HSET', KEYS[1], 'seen', oldseen, 'seenw', oldseenw or '0')
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

_check = hotstate.LuaScript(CHECK_LUA)
_write = hotstate.LuaScript(WRITE_LUA)


def check(
    *, player_id: int, token_digest: str, device_id: str, now: float, idle: int, write_interval: int
) -> list[Any]:
    """One round trip; raises RedisUnavailable."""
    keys = [auth_key(player_id), seen_key(hotstate.shard_of(player_id)), unknown_key(player_id, token_digest)]
    args = [token_digest, device_id, repr(now), idle, write_interval, player_id, IDENTITY]
    result = hotstate.call(lambda r: _check(r, keys, args))
    return [v.decode() if isinstance(v, bytes) else v for v in result]


def write(*, player_id: int, generation: int, ttl: int, fields: dict[str, Any]) -> bool:
    """Replace the student's copy unless Redis holds a newer generation; raises RedisUnavailable."""
    payload = json.dumps(fields)
    return bool(hotstate.call(lambda r: _write(r, [auth_key(player_id)], [generation, ttl, payload, IDENTITY])))


def remember_unknown(*, player_id: int, token_digest: str) -> None:
    """Raises RedisUnavailable."""
    hotstate.call(lambda r: r.set(unknown_key(player_id, token_digest), IDENTITY, ex=UNKNOWN_TTL))


def forget_many(player_ids: list[int]) -> None:
    """Drop the students' copies (one pipeline): they are rebuilt from the database on next use.
    Raises RedisUnavailable."""

    def run(r: redis.Redis) -> None:
        pipe = r.pipeline(transaction=False)
        for pid in player_ids:
            pipe.delete(auth_key(pid))
        pipe.execute()

    if player_ids:
        hotstate.call(run)


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
