-- KEYS: this scope's failure counter, this scope's lock, the username's failure counter, the set of
-- the username's keys (all tagged by the username: one Cluster slot). Returns {scope count, username count}.
local n = window_hit(KEYS[1], 1, window_ms)
local u = window_hit(KEYS[3], 1, user_window_ms)
if n >= tonumber(limit) then redis.call('SET', KEYS[2], '1', 'PX', lock_ms) end
redis.call('SADD', KEYS[4], KEYS[1], KEYS[2])
redis.call('PEXPIRE', KEYS[4], set_ttl_ms)
return {n, u}
