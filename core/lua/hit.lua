-- KEYS: the counter. Returns {count, ttl ms}.
local n, ttl = window_hit(KEYS[1], amount, window_ms)
return {n, ttl}
