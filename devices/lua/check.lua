-- The device + session check. KEYS: auth hash, seen set, unknown-digest marker. Order of the
-- design: session state (ended > expired) before the device binding. A copy (or an unknown-token
-- marker) stamped by another server identity is suspect (Redis may have gone back in time and
-- brought back an ended session): the caller asks the database and rebuilds the copy.
local h = KEYS[1]
local st = redis.call('HGET', h, 'st')
if not st then
  if redis.call('GET', KEYS[3]) == identity then return {'unknown'} end
  return {'miss'}
end
if st ~= identity then return {'miss'} end
local cur = redis.call('HGET', h, 'cur')
if cur == digest then
  local f = redis.call('HMGET', h, 'dev', 'expires', 'seen', 'seenw', 'sid', 'started',
                       'dname', 'plat', 'tz', 'tzp', 'tze', 'uid')
  local now = tonumber(now)
  if now >= tonumber(f[2]) then return {'expired', 'lifetime'} end
  if now - tonumber(f[3]) >= tonumber(idle) then return {'expired', 'idle'} end
  if f[1] ~= device_id then return {'mismatch'} end
  redis.call('HSET', h, 'seen', now)
  if now - tonumber(f[4] or '0') >= tonumber(write_interval) then
    redis.call('HSET', h, 'seenw', now)
    redis.call('SADD', KEYS[2], player_id)
  end
  return {'ok', f[5], f[6], f[2], now, f[7] or '', f[8] or '',
          f[9] or 'UTC', f[10] or '', f[11] or '', f[12] or '0'}
end
local t = redis.call('HGET', h, 't:' .. digest)
if t then return {'ended', t} end
if redis.call('HGET', h, 'complete') == '1' then
  -- A copy Redis cannot update (a demoted, read-only Redis) may not know a session started since:
  -- this no-op write fails there with READONLY, and the caller asks the database instead.
  redis.call('HDEL', h, 'probe')
  return {'unknown'}
end
if redis.call('GET', KEYS[3]) == identity then return {'unknown'} end
return {'miss'}
