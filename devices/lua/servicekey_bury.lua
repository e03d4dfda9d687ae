-- KEYS: cached key, tombstone. A revocation: the tombstone outlives any cached copy.
redis.call('SET', KEYS[2], '1', 'EX', ttl)
redis.call('DEL', KEYS[1])
return 1
