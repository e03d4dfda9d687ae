-- KEYS: a lock. Deletes it only if it is still ours.
if redis.call('GET', KEYS[1]) == token then return redis.call('DEL', KEYS[1]) end return 0
