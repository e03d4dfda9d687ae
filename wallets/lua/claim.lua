-- KEYS: dirty set, then per student: pending, in-flight, in-flight meta; ARGV after the named ones:
-- the player ids. Moves pending events under the claim; adopts claims whose lease expired; leaves
-- live claims of another flush alone. Lease times come from Redis TIME (one clock for every
-- flusher). A student stays in the dirty set until the release finds nothing left, so an abandoned
-- claim is found again by the next flush. Returns {pid, adopted, {events...}} triples.
local out = {}
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease_until = string.format('%.6f', now + tonumber(lease_seconds))
for i = 3, #ARGV do
  local pid = ARGV[i]
  local base = 2 + (i - 3) * 3
  local pe, inf, meta = KEYS[base], KEYS[base + 1], KEYS[base + 2]
  local owner = redis.call('HGET', meta, 'claim')
  local lease = tonumber(redis.call('HGET', meta, 'lease') or '0')
  if owner and owner ~= claim_id and lease > now then
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
      redis.call('HSET', meta, 'claim', claim_id, 'lease', lease_until)
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
