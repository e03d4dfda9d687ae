-- KEYS: cached key, rate counter, tombstone.
-- Returns {'revoked'} | {'unknown'} | {'hit', cached, count, ttl_ms} | {'miss', count, ttl_ms}.
-- A cached value is "<identity>|<value>": one written under another server identity (Redis went
-- back in time, and may have lost a tombstone) is a miss, so the database answers.
if redis.call('EXISTS', KEYS[3]) == 1 then return {'revoked'} end
local v = redis.call('GET', KEYS[1])
if v then
  local sep = string.find(v, '|', 1, true)
  if sep and string.sub(v, 1, sep - 1) == identity then v = string.sub(v, sep + 1) else v = false end
end
if v == '-' then return {'unknown'} end
local n, ttl = window_hit(KEYS[2], 1, window_ms)
if v then return {'hit', v, n, ttl} end
return {'miss', n, ttl}
