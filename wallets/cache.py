"""The rewards half's Redis keys and Lua scripts.

Per student (all under the shard's hash tag, so one Lua call touches one Redis Cluster slot):
``w:<id>`` wallet hash, ``wl:<id>`` lessons done on the wallet's local day, ``pe:<id>`` pending
events (JSON), ``if:<id>`` events claimed by a flush with ``ifm:<id>`` (claim id, lease),
``idem:<digest>`` idempotency records. Per shard: ``dirty`` (students with pending events).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from memora_project import hotstate
from memora_project.redisconn import IDENTITY

# Students whose wallet this process could not rebuild after a database-first change: it rebuilds
# them (or takes the database path) before trusting their Redis wallet again.
stale_players: set[int] = set()

WALLET_FIELDS = ("xp", "streak", "longest", "last", "lastd", "freezes", "ver", "day", "xpd", "gen", "brk")


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


def lua_arguments(names: tuple[str, ...]) -> str:
    """The Lua prelude that names a script's ARGV: one spec gives the positions to the script and to
    its Python caller (:func:`argv`), so no position is written twice."""
    return "local " + ", ".join(names) + " = " + ", ".join(f"ARGV[{i}]" for i in range(1, len(names) + 1)) + "\n"


def argv(names: tuple[str, ...], values: dict[str, Any]) -> list[Any]:
    return [values[name] for name in names]


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

# KEYS: 1 wallet, 2 lessons of the last activity day, 3 pending, 4 dirty set, 5 idempotency record,
# 6 rate counter, 7 completions of the local day (`per_day`: 0 for no bound). One call: dedupe, the
# XP and streak rules, the wallet hash, the events (each with the wallet after it, its generation
# and version, and its request's key and fingerprint digests), the dirty set, the stored response.
# Mirrors wallets.rules.
AWARD_LUA = (
    lua_arguments(AWARD_ARGS)
    + """
local rec = redis.call('GET', KEYS[5])
if rec then
  local r = cjson.decode(rec)
  -- Records written before the ledger kept 128-bit digests hold the whole SHA-256.
  if string.sub(r['fp'], 1, 32) ~= fp then return {'conflict'} end
  return {'replay', tostring(r['status']), r['body']}
end
local stamp = redis.call('HGET', KEYS[1], 'st')
if not stamp then return {'cold'} end
-- Stamped by another server identity: Redis may have gone back in time; rebuild from the truth.
if stamp ~= identity then return {'suspect'} end
local limit = tonumber(rate_limit)
if limit > 0 then
  local n = redis.call('INCR', KEYS[6])
  local ttl = redis.call('PTTL', KEYS[6])
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[6], rate_window_ms)
    ttl = tonumber(rate_window_ms)
  end
  if n > limit then return {'limited', tostring(ttl)} end
end
local per_day = tonumber(per_day)
if per_day > 0 then
  -- A day before the counted one (a westward time zone move) counts as the counted one.
  local c = redis.call('HMGET', KEYS[7], 'd', 'n')
  local cday, done = day, 0
  if c[1] and c[1] >= day then cday, done = c[1], tonumber(c[2]) or 0 end
  if done >= per_day then return {'limited', per_day_retry_ms} end
  redis.call('HSET', KEYS[7], 'd', cday, 'n', done + 1)
  redis.call('EXPIRE', KEYS[7], 172800)
end
local w = redis.call('HMGET', KEYS[1], 'xp', 'streak', 'longest', 'last', 'lastd', 'freezes', 'ver', 'xpd', 'brk',
                    'gen')
local xp = tonumber(w[1]) or 0
local streak = tonumber(w[2]) or 0
local longest = tonumber(w[3]) or 0
local last = tonumber(w[4])
local lastd = w[5]
if lastd == '' then lastd = nil end
local freezes = tonumber(w[6]) or 0
local ver = tonumber(w[7]) or 0
local xpd = tonumber(w[8]) or 0
local brk = tonumber(w[9]) or 0
local gen = tonumber(w[10]) or 0
local dayn = tonumber(day_ordinal)
local every = tonumber(freeze_every)
local max_freezes = tonumber(freeze_max)

-- An ordinal day (Python's date.toordinal) as YYYY-MM-DD (Howard Hinnant's civil_from_days).
local function iso(ordinal)
  local z = ordinal - 719163 + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if mp >= 10 then m = mp - 9 end
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02d', y, m, d)
end

local function shown_at(d)
  if last == nil then return 0 end
  if last >= d - 1 then return streak end
  if d - last - 1 <= freezes then return streak end
  return 0
end

local spare = {}
for id in string.gmatch(spare_ids, '[^,]+') do spare[#spare + 1] = id end
local events = {}
local main = nil
local function add_event(id, k, amount, eday)
  ver = ver + 1
  local e = {
    event_id = id, kind = k, amount = amount, lesson_id = '', reason = '', local_day = eday,
    -- One call's events are a microsecond apart, in order, so the history lists them in order.
    accepted_at = string.format('%.6f', tonumber(now) + #events * 0.000001),
    gen = gen, version = ver, xp_total_after = xp, xp_day_after = xpd, capped = false,
    streak_after = streak, longest_after = longest, last_day_after = lastd or '',
    freezes_after = freezes, break_after = brk,
    idem = idem, fp = fp, req = event_id, actor = actor
  }
  events[#events + 1] = e
  return e
end

local awarded = tonumber(base)
local capped = false
local before = shown_at(dayn)
if kind == 'lesson' then
  local earned = false
  if last == nil or dayn > last then
    if last == nil then
      streak = 1
    elseif dayn == last + 1 then
      streak = streak + 1
    else
      local gap = dayn - last - 1
      if gap <= freezes then
        for i = 1, gap do
          freezes = freezes - 1
          lastd = iso(last + i)
          add_event(spare[i], 'freeze_used', 0, lastd)['xp_day_after'] = 0
        end
        streak = streak + 1
      else
        brk = streak
        streak = 1
      end
    end
    if streak > 1 and every > 0 and streak % every == 0 and freezes < max_freezes then
      earned = true
    end
    if streak > longest then longest = streak end
    last = dayn
    lastd = day
    xpd = 0
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'day', day)
  end
  -- A day before the last one counts as the last day: it never reopens a closed day's cap.
  -- The same lesson again that day earns 0; otherwise the award is cut to what the cap leaves.
  if redis.call('SISMEMBER', KEYS[2], lesson_id) == 1 then
    awarded = 0
  else
    local left = tonumber(cap) - xpd
    if left < 0 then left = 0 end
    if awarded > left then
      awarded = left
      capped = true
    end
    redis.call('SADD', KEYS[2], lesson_id)
  end
  xpd = xpd + awarded
  xp = xp + awarded
  main = add_event(event_id, 'lesson', awarded, lastd)
  main['lesson_id'] = lesson_id
  main['capped'] = capped
  if earned then
    -- After the lesson event: a freeze earned on this streak day is an event of its own.
    freezes = freezes + 1
    add_event(spare[#spare], 'freeze_earned', 0, lastd)
  end
elseif kind == 'restore' then
  if brk > 0 then
    streak = brk + streak
    brk = 0
    if last < dayn - 1 then
      last = dayn - 1
      lastd = iso(last)
    end
  elseif last ~= nil and streak > 0 and before == 0 then
    last = dayn - 1
    lastd = iso(last)
  else
    return {'nothing'}
  end
  if streak > longest then longest = streak end
  awarded = 0
  main = add_event(event_id, 'streak_restored', 0, day)
  main['streak_before'] = before
else
  xp = xp + awarded
  main = add_event(event_id, kind, awarded, day)
end
main['reason'] = reason

local shown_today = 0
if last ~= nil and last >= dayn then shown_today = xpd end
local wallet = {
  xp_total = xp, xp_today = shown_today, current_streak = shown_at(dayn), longest_streak = longest,
  last_activity_date = lastd or cjson.null, today = day,
  streak_active_today = (last ~= nil and last >= dayn), streak_freezes = freezes
}
local body
if kind == 'lesson' then
  body = cjson.encode({event_id = event_id, xp_awarded = awarded, capped = capped, wallet = wallet})
elseif kind == 'restore' then
  body = cjson.encode({event_id = event_id, kind = 'streak_restored', streak_before = before,
                       streak_after = shown_at(dayn), wallet = wallet})
else
  body = cjson.encode({event_id = event_id, xp_awarded = awarded, wallet = wallet})
end
local lastv = ''
if last ~= nil then lastv = tostring(last) end
redis.call('HSET', KEYS[1], 'xp', xp, 'streak', streak, 'longest', longest, 'last', lastv,
           'lastd', lastd or '', 'ver', ver, 'xpd', xpd, 'freezes', freezes, 'brk', brk)
for i = 1, #events do redis.call('RPUSH', KEYS[3], cjson.encode(events[i])) end
redis.call('SADD', KEYS[4], player_id)
redis.call('SET', KEYS[5], cjson.encode({fp = fp, status = 201, body = body}), 'PX', idem_ttl_ms)
return {'ok', body}
"""
)

# KEYS: 1 wallet, 2 lessons today, 3.. idempotency records. ARGV: 1 generation, 2 expected version
# ('' when the wallet was absent), 3 wallet fields JSON, 4 lessons JSON, 5 idem ttl ms, 6 the
# server's identity (the stamp), 7.. records. Refuses when Redis holds a newer generation or an
# award moved the version since the read.
REBUILD_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'gen', 'ver')
if cur[1] and tonumber(cur[1]) > tonumber(ARGV[1]) then return 0 end
local expected = ARGV[2]
if expected == '' then
  if cur[2] then return -1 end
elseif cur[2] ~= expected then
  return -1
end
local d = cjson.decode(ARGV[3])
redis.call('DEL', KEYS[1], KEYS[2])
local args = {'gen', ARGV[1], 'st', ARGV[6]}
for k, v in pairs(d) do
  args[#args + 1] = k
  args[#args + 1] = tostring(v)
end
redis.call('HSET', KEYS[1], unpack(args))
local lessons = cjson.decode(ARGV[4])
for i = 1, #lessons do redis.call('SADD', KEYS[2], lessons[i]) end
-- The ledger's answer wins over a record Redis holds (after the flush dropped a duplicate, the
-- record named the dropped event).
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 4], 'PX', ARGV[5])
end
return 1
"""

# KEYS: dirty set, then per student: pending, in-flight, in-flight meta. ARGV: claim id, lease
# seconds, then the player ids. Moves pending events under the claim; adopts claims whose lease
# expired; leaves live claims of another flush alone. Lease times come from Redis TIME (one clock
# for every flusher). A student stays in the dirty set until the release finds nothing left, so an
# abandoned claim is found again by the next flush. Returns {pid, adopted, {events...}} triples.
CLAIM_LUA = """
local out = {}
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease_until = string.format('%.6f', now + tonumber(ARGV[2]))
for i = 3, #ARGV do
  local pid = ARGV[i]
  local base = 2 + (i - 3) * 3
  local pe, inf, meta = KEYS[base], KEYS[base + 1], KEYS[base + 2]
  local owner = redis.call('HGET', meta, 'claim')
  local lease = tonumber(redis.call('HGET', meta, 'lease') or '0')
  if owner and owner ~= ARGV[1] and lease > now then
    -- a live flush holds it: not ours
  else
    if redis.call('EXISTS', pe) == 1 then
      if redis.call('EXISTS', inf) == 0 then
        redis.call('RENAME', pe, inf)
      else
        -- DEL before RPUSH: a full Redis (noeviction) refuses a script's first write only when
        -- it may grow memory, so this move still drains a full Redis.
        local items = redis.call('LRANGE', pe, 0, -1)
        redis.call('DEL', pe)
        for j = 1, #items, 1000 do
          redis.call('RPUSH', inf, unpack(items, j, math.min(j + 999, #items)))
        end
      end
    end
    if redis.call('EXISTS', inf) == 1 then
      redis.call('HSET', meta, 'claim', ARGV[1], 'lease', lease_until)
      out[#out + 1] = pid
      -- Adopted from an earlier flush: some of these events may already be in the ledger.
      if owner then out[#out + 1] = '1' else out[#out + 1] = '0' end
      out[#out + 1] = redis.call('LRANGE', inf, 0, -1)
    else
      redis.call('DEL', meta)
      redis.call('SREM', KEYS[1], pid)
    end
  end
end
return out
"""

# KEYS: dirty set, then per student: in-flight, meta, pending. ARGV: claim id, mode, then the
# player ids. 'release' deletes only this claim's events (they are in the ledger) and leaves the
# dirty set when nothing new is pending; 'abandon' ends the lease so the next flush adopts at once.
RELEASE_LUA = """
local n = 0
for i = 3, #ARGV do
  local base = 2 + (i - 3) * 3
  local inf, meta, pe = KEYS[base], KEYS[base + 1], KEYS[base + 2]
  if redis.call('HGET', meta, 'claim') == ARGV[1] then
    if ARGV[2] == 'abandon' then
      redis.call('HSET', meta, 'lease', '0')
    else
      redis.call('DEL', inf, meta)
      if redis.call('EXISTS', pe) == 0 then redis.call('SREM', KEYS[1], ARGV[i]) end
    end
    n = n + 1
  end
end
return n
"""

# KEYS: wallet. ARGV: the server's identity. The wallet's fields, or nothing when it is absent or
# stamped by another server identity (then it is rebuilt from the truth).
READ_LUA = """
if redis.call('HGET', KEYS[1], 'st') ~= ARGV[1] then return false end
return redis.call('HMGET', KEYS[1], unpack(ARGV, 2))
"""

_award = hotstate.LuaScript(AWARD_LUA)
_read = hotstate.LuaScript(READ_LUA)
_rebuild = hotstate.LuaScript(REBUILD_LUA)
_claim = hotstate.LuaScript(CLAIM_LUA)
_release = hotstate.LuaScript(RELEASE_LUA)


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def award(*, pid: int, idem_digest: str, values: dict[str, Any]) -> list[Any]:
    args = argv(AWARD_ARGS, values)
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


def read_wallet(pid: int) -> dict[str, str] | None:
    """The wallet hash, or None when it is absent or suspect."""
    values = hotstate.call(lambda r: _read(r, [wallet_key(pid)], [IDENTITY, *WALLET_FIELDS]))
    if not values or values[WALLET_FIELDS.index("ver")] is None:
        return None
    return {name: _text(v) or "" for name, v in zip(WALLET_FIELDS, values, strict=True)}


def forget_many(player_ids: list[int]) -> None:
    """Drop the students' wallet hashes (one pipeline; their pending events stay): each is rebuilt
    from the database and those events on next use. Raises RedisUnavailable."""

    def run(r: redis.Redis) -> None:
        pipe = r.pipeline(transaction=False)
        for pid in player_ids:
            pipe.delete(wallet_key(pid))
        pipe.execute()

    if player_ids:
        hotstate.call(run)


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
    fields: dict[str, str],
    lessons: list[str],
    idem_records: dict[str, str],
    idem_ttl_ms: int,
) -> int:
    """1 written, 0 refused (newer generation in Redis), -1 raced by an award (read again)."""
    keys = [wallet_key(pid), lessons_key(pid), *(idem_key(pid, d) for d in idem_records)]
    args = [generation, expected_version or "", json.dumps(fields), json.dumps(lessons), idem_ttl_ms, IDENTITY]
    args += list(idem_records.values())
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
            _claim(pipe, keys, [claim_id, repr(float(lease_seconds)), *pids])
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
            _release(pipe, keys, [claim_id, "abandon" if abandon else "release", *shard_pids])
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
