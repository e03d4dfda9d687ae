-- KEYS: the lock of this scope ((username, address) or (username, device)), the username's failure
-- counter, this scope's failure counter. `user_limit` 0: the username's lock does not apply.
-- Returns {the milliseconds left on the longest lock (0 when not locked), 1 if this scope has a
-- failure counter (a successful login then clears it), else 0}.
local wait = 0
local t = redis.call('PTTL', KEYS[1])
if t > 0 then wait = t end
local limit = tonumber(user_limit)
if limit > 0 then
  local n = tonumber(redis.call('GET', KEYS[2]) or '0')
  if n >= limit then
    local t2 = redis.call('PTTL', KEYS[2])
    if t2 > wait then wait = t2 end
  end
end
return {wait, redis.call('EXISTS', KEYS[3])}
