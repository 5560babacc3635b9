-- wrk script for bench/run.py: each request picks a random path from the file named by
-- BENCH_URLS (one path per line), and `done` prints one JSON line with the results.
--   BENCH_URLS=urls.txt wrk -t2 -c64 -d10s -s bench/wrk.lua http://127.0.0.1:PORT
-- bench/load.lua runs this file first and wraps its setup, init, request and done.

local function load_paths(name)
  local paths = {}
  local f = assert(io.open(name, "r"), "cannot open BENCH_URLS file " .. tostring(name))
  for line in f:lines() do
    if #line > 0 then paths[#paths + 1] = line end
  end
  f:close()
  assert(#paths > 0, "no paths in " .. name)
  return paths
end

local paths = load_paths(os.getenv("BENCH_URLS"))
local requests_ = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end

function init(args)
  -- each thread has its own Lua state; seed it differently, then pre-format every request
  math.randomseed(os.time() * 1000 + (thread_id or 0))
  for i, p in ipairs(paths) do
    requests_[i] = wrk.format("GET", p)
  end
end

function request()
  return requests_[math.random(#requests_)]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}, ' ..
    '"distinct_paths": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), #paths))
end
