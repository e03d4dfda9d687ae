-- KEYS: 1 wallet, 2 lessons of the open day, 3.. idempotency records; ARGV after the named ones:
-- the records, in the order of their keys. `expected_version` '' when the wallet was absent.
-- Refuses (0) when Redis holds a newer generation, (-1) when an award moved the version since the
-- read; stamps the hash with the server identity.
local cur = redis.call('HMGET', KEYS[1], 'gen', 'ver')
if cur[1] and tonumber(cur[1]) > tonumber(generation) then return 0 end
local expected = expected_version
if expected == '' then
  if cur[2] then return -1 end
elseif cur[2] ~= expected then
  return -1
end
local d = cjson.decode(fields_json)
redis.call('DEL', KEYS[1], KEYS[2])
local args = {'gen', generation, 'st', identity}
for k, v in pairs(d) do
  args[#args + 1] = k
  args[#args + 1] = tostring(v)
end
redis.call('HSET', KEYS[1], unpack(args))
local lessons = cjson.decode(lessons_json)
for i = 1, #lessons do redis.call('SADD', KEYS[2], lessons[i]) end
-- The ledger's answer wins over a record Redis holds (after the flush dropped a duplicate, the
-- record named the dropped event).
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 4], 'PX', idem_ttl_ms)
end
return 1
