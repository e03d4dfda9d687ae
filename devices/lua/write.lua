-- KEYS: auth hash. Replace the student's copy (stamped with the server identity) unless Redis holds
-- one built from a newer generation; keep a later last-seen of the same session.
local gen = tonumber(generation)
local old = tonumber(redis.call('HGET', KEYS[1], 'gen') or '-1')
if old > gen then return 0 end
local oldsid = redis.call('HGET', KEYS[1], 'sid')
local oldseen = redis.call('HGET', KEYS[1], 'seen')
local oldseenw = redis.call('HGET', KEYS[1], 'seenw')
local d = cjson.decode(fields_json)
redis.call('DEL', KEYS[1])
local args = {'gen', generation, 'complete', '1', 'st', identity}
for k, v in pairs(d) do
  args[#args + 1] = k
  args[#args + 1] = tostring(v)
end
redis.call('HSET', KEYS[1], unpack(args))
if oldsid and d['sid'] and tostring(d['sid']) == oldsid and oldseen
   and tonumber(oldseen) > tonumber(d['seen']) then
  redis.call('HSET', KEYS[1], 'seen', oldseen, 'seenw', oldseenw or '0')
end
redis.call('EXPIRE', KEYS[1], ttl)
return 1
