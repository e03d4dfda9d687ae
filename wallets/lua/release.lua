-- KEYS: dirty set, then per student: in-flight, meta, pending; ARGV after the named ones: the
-- player ids. 'release' deletes only this claim's events (they are in the ledger) and leaves the
-- dirty set when nothing new is pending; 'abandon' ends the lease so the next flush adopts at once.
local n = 0
for i = 3, #ARGV do
  local base = 2 + (i - 3) * 3
  local inf, meta, pe = KEYS[base], KEYS[base + 1], KEYS[base + 2]
  if redis.call('HGET', meta, 'claim') == claim_id then
    if mode == 'abandon' then
      redis.call('HSET', meta, 'lease', '0')
    else
      redis.call('DEL', inf, meta)
      if redis.call('EXISTS', pe) == 0 then redis.call('SREM', KEYS[1], ARGV[i]) end
    end
    n = n + 1
  end
end
return n
