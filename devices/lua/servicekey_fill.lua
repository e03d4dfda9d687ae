-- KEYS: cached key, tombstone. The only way the cache is filled: never over a tombstone, so a
-- fill that read the database before a revocation committed writes nothing; stamped with the
-- server identity.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], identity .. '|' .. value, 'EX', ttl)
return 1
