-- KEYS: wallet. ARGV after `identity`: the field names. The fields, or nothing when the hash is
-- absent or stamped by another server identity (then it is rebuilt from the truth).
if redis.call('HGET', KEYS[1], 'st') ~= identity then return false end
return redis.call('HMGET', KEYS[1], unpack(ARGV, 2))
