-- The shared fragment of every fixed-window counter: INCRBY and the expiry in one step, so no
-- counter ever lives without its expiry. Returns the count and the window's milliseconds left.
local function window_hit(key, amount, window_ms)
  local n = redis.call('INCRBY', key, amount)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('PEXPIRE', key, window_ms)
    ttl = tonumber(window_ms)
  end
  return n, ttl
end
