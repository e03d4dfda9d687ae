-- wrk script of the HTTP benchmark: every request comes from the next student of a list
-- (token and device id rotate), each thread starting at its own offset.
-- args: mode (plain | wallet | lesson | login), credentials file, run id, thread count
-- The credentials file has one "<token-or-username> <device id>" per line.
local creds = {}
local n = 0
local idx = 0
local counter = 0
local mode, run_id, body_login
local started = 0

function setup(thread)
  thread:set("tid", started)
  started = started + 1
end

function init(args)
  mode = args[1]
  run_id = args[3]
  local threads = tonumber(args[4])
  for line in io.lines(args[2]) do
    local a, b = line:match("^(%S+)%s+(%S+)$")
    if a then
      n = n + 1
      creds[n] = { a, b }
    end
  end
  idx = math.floor(n * tid / threads)
end

function request()
  idx = idx % n + 1
  counter = counter + 1
  local c = creds[idx]
  if mode == "plain" then
    return wrk.format("GET", "/api/v1/bench/plain/")
  elseif mode == "wallet" then
    return wrk.format("GET", "/api/v1/wallet/", { ["Authorization"] = "Bearer " .. c[1], ["X-Device-ID"] = c[2] })
  elseif mode == "lesson" then
    local headers = {
      ["Authorization"] = "Bearer " .. c[1],
      ["X-Device-ID"] = c[2],
      ["Content-Type"] = "application/json",
      -- unique per request: run, thread and the thread's counter
      ["Idempotency-Key"] = run_id .. "-" .. tid .. "-" .. counter,
    }
    return wrk.format("POST", "/api/v1/lessons/bench-" .. (counter % 40) .. "/complete/", headers, '{"score":80}')
  else -- login
    local body = '{"username":"' .. c[1] .. '","password":"correct horse battery"}'
    return wrk.format("POST", "/api/v1/auth/login/", { ["Content-Type"] = "application/json", ["X-Device-ID"] = c[2] }, body)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
