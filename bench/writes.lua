-- wrk script for bench/run.py's write measure: each request PATCHes the note of a random
-- observation (ids BENCH_MIN_ID..BENCH_MAX_ID) with a note no earlier write set, so every
-- request writes a new version, its revision and its audit event. Builds on wrk.lua (done).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk.lua")

local headers = { ["X-API-Key"] = os.getenv("BENCH_KEY"), ["Content-Type"] = "application/json" }
local low = tonumber(os.getenv("BENCH_MIN_ID"))
local high = tonumber(os.getenv("BENCH_MAX_ID"))
local sequence = 0

function request()
  sequence = sequence + 1
  local id = math.random(low, high)
  local body = string.format('{"note": "bench: thread %d, write %d, %d"}', thread_id, sequence, os.time())
  return wrk.format("PATCH", "/api/v1/observations/" .. id .. "?reason=bench+write", headers, body)
end
