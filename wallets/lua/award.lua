-- One award. KEYS: 1 wallet, 2 lessons of the last activity day, 3 pending, 4 dirty set,
-- 5 idempotency record, 6 rate counter, 7 completions of the local day (`per_day` 0: no bound).
-- Dedupe, the XP and streak rules (mirrors wallets.rules.apply; the property tests hold it to
-- it), the wallet hash, the events (each with the wallet after it, its generation and version, its
-- request's key and fingerprint digests), the dirty set, the idempotency record. Returns the
-- answer's record (wallets.replay.Answer: Python renders the body).
local rec = redis.call('GET', KEYS[5])
if rec then
  local r = cjson.decode(rec)
  -- The request's 64-bit fingerprint digest against the record's first 64 bits (records written
  -- before hold 128 bits, or the whole SHA-256).
  if string.sub(r['fp'], 1, #fp) ~= fp then return {'conflict'} end
  if r['r'] then return {'replay', r['r']} end
  -- A record written before answers carried their state: its body as it was.
  return {'replay_body', tostring(r['status']), r['body']}
end
local stamp = redis.call('HGET', KEYS[1], 'st')
if not stamp then return {'cold'} end
-- Stamped by another server identity: Redis may have gone back in time; rebuild from the truth.
if stamp ~= identity then return {'suspect'} end
local limit = tonumber(rate_limit)
if limit > 0 then
  local n, ttl = window_hit(KEYS[6], 1, rate_window_ms)
  if n > limit then return {'limited', tostring(ttl)} end
end
local per_day = tonumber(per_day)
if per_day > 0 then
  -- A day before the counted one (a westward time zone move) counts as the counted one.
  local c = redis.call('HMGET', KEYS[7], 'd', 'n')
  local cday, done = day, 0
  if c[1] and c[1] >= day then cday, done = c[1], tonumber(c[2]) or 0 end
  if done >= per_day then return {'limited', per_day_retry_ms} end
  redis.call('HSET', KEYS[7], 'd', cday, 'n', done + 1)
  redis.call('EXPIRE', KEYS[7], 172800)
end
local w = redis.call('HMGET', KEYS[1], 'xp', 'streak', 'longest', 'last', 'lastd', 'freezes', 'ver', 'xpd', 'brk',
                    'gen')
local xp = tonumber(w[1]) or 0
local streak = tonumber(w[2]) or 0
local longest = tonumber(w[3]) or 0
local last = tonumber(w[4])
local lastd = w[5]
if lastd == '' then lastd = nil end
local freezes = tonumber(w[6]) or 0
local ver = tonumber(w[7]) or 0
local xpd = tonumber(w[8]) or 0
local brk = tonumber(w[9]) or 0
local gen = tonumber(w[10]) or 0
local dayn = tonumber(day_ordinal)
local every = tonumber(freeze_every)
local max_freezes = tonumber(freeze_max)

-- An ordinal day (Python's date.toordinal) as YYYY-MM-DD (Howard Hinnant's civil_from_days).
local function iso(ordinal)
  local z = ordinal - 719163 + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if mp >= 10 then m = mp - 9 end
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02d', y, m, d)
end

local function shown_at(d)
  if last == nil then return 0 end
  if last >= d - 1 then return streak end
  if d - last - 1 <= freezes then return streak end
  return 0
end

local spare = {}
for id in string.gmatch(spare_ids, '[^,]+') do spare[#spare + 1] = id end
local events = {}
local main = nil
local function add_event(id, k, amount, eday)
  ver = ver + 1
  local e = {
    event_id = id, kind = k, amount = amount, lesson_id = '', reason = '', local_day = eday,
    -- One call's events are a microsecond apart, in order, so the history lists them in order.
    accepted_at = string.format('%.6f', tonumber(now) + #events * 0.000001),
    gen = gen, version = ver, xp_total_after = xp, xp_day_after = xpd, capped = false,
    streak_after = streak, longest_after = longest, last_day_after = lastd or '',
    freezes_after = freezes, break_after = brk,
    idem = idem, fp = fp, req = event_id, actor = actor
  }
  events[#events + 1] = e
  return e
end

local awarded = tonumber(base)
local capped = false
local before = shown_at(dayn)
if kind == 'lesson' then
  local earned = false
  if last == nil or dayn > last then
    if last == nil then
      streak = 1
    elseif dayn == last + 1 then
      streak = streak + 1
    else
      local gap = dayn - last - 1
      if gap <= freezes then
        for i = 1, gap do
          freezes = freezes - 1
          lastd = iso(last + i)
          add_event(spare[i], 'freeze_used', 0, lastd)['xp_day_after'] = 0
        end
        streak = streak + 1
      else
        brk = streak
        streak = 1
      end
    end
    if streak > 1 and every > 0 and streak % every == 0 and freezes < max_freezes then
      earned = true
    end
    if streak > longest then longest = streak end
    last = dayn
    lastd = day
    xpd = 0
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'day', day)
  end
  -- A day before the last one counts as the last day: it never reopens a closed day's cap.
  -- The same lesson again that day earns 0; otherwise the award is cut to what the cap leaves.
  if redis.call('SISMEMBER', KEYS[2], lesson_id) == 1 then
    awarded = 0
  else
    local left = tonumber(cap) - xpd
    if left < 0 then left = 0 end
    if awarded > left then
      awarded = left
      capped = true
    end
    redis.call('SADD', KEYS[2], lesson_id)
  end
  xpd = xpd + awarded
  xp = xp + awarded
  main = add_event(event_id, 'lesson', awarded, lastd)
  main['lesson_id'] = lesson_id
  main['capped'] = capped
  if earned then
    -- After the lesson event: a freeze earned on this streak day is an event of its own.
    freezes = freezes + 1
    add_event(spare[#spare], 'freeze_earned', 0, lastd)
  end
elseif kind == 'restore' then
  if brk > 0 then
    streak = brk + streak
    brk = 0
  elseif last == nil or streak == 0 or before ~= 0 then
    return {'nothing'}
  end
  if last == nil or last < dayn - 1 then
    -- The last day moves to yesterday, a day without lessons: it becomes the open day.
    last = dayn - 1
    lastd = iso(last)
    xpd = 0
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'day', lastd)
  end
  if streak > longest then longest = streak end
  awarded = 0
  main = add_event(event_id, 'streak_restored', 0, day)
  main['streak_before'] = before
else
  xp = xp + awarded
  main = add_event(event_id, kind, awarded, day)
end
main['reason'] = reason

-- The answer's record, in wallets.replay.Answer.record's order.
local capped_flag = 0
if capped then capped_flag = 1 end
local answer = table.concat({event_id, main['kind'], awarded, capped_flag, before, day, xp, xpd, streak, longest,
                             lastd or '', freezes, brk}, ',')
local lastv = ''
if last ~= nil then lastv = tostring(last) end
redis.call('HSET', KEYS[1], 'xp', xp, 'streak', streak, 'longest', longest, 'last', lastv,
           'lastd', lastd or '', 'ver', ver, 'xpd', xpd, 'freezes', freezes, 'brk', brk)
for i = 1, #events do redis.call('RPUSH', KEYS[3], cjson.encode(events[i])) end
redis.call('SADD', KEYS[4], player_id)
redis.call('SET', KEYS[5], cjson.encode({fp = fp, r = answer}), 'PX', idem_ttl_ms)
return {'ok', answer}
