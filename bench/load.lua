-- wrk script for bench/load.py (`make load`): reads as bench/wrk.lua makes them (a random path
-- per request from the file BENCH_URLS names), and a share of curator writes: POST a new
-- observation, PATCH an observation's note, DELETE an observation this thread created.
-- response() counts every answer by kind and status; done() prints one LOAD_JSON line.
--   LOAD_KEY          the curator's API key (scope write), sent as X-API-Key
--   LOAD_WRITE_SHARE  fraction of requests that write (0.10)
--   LOAD_PATCH_IDS    comma-separated ids of observations to PATCH
--   LOAD_NEW_KEYS     file of "city indicator period" lines no observation has yet; thread t
--                     of LOAD_THREADS POSTs lines t, t + LOAD_THREADS, ... once each, so no
--                     POST can meet a 409
--   LOAD_SOURCE_ID    the source every POSTed observation cites

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk.lua") -- setup (thread ids), init (reads), request (a read), done
local read_request, base_setup, base_init, base_done = request, setup, init, done

local key = assert(os.getenv("LOAD_KEY"), "LOAD_KEY is not set")
local write_share = tonumber(os.getenv("LOAD_WRITE_SHARE") or "0.10")
local source_id = tonumber(os.getenv("LOAD_SOURCE_ID") or "1")
local reason = "?reason=load+test+write"
local json_headers = { ["X-API-Key"] = key, ["Content-Type"] = "application/json" }
local key_headers = { ["X-API-Key"] = key }

local threads = {}
patch_ids, new_keys, created, counts, failures = {}, {}, {}, {}, {}
local next_new, sequence = 1, 0

local function bump(tbl, name)
  tbl[name] = (tbl[name] or 0) + 1
end

function setup(thread)
  base_setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  base_init(args)
  for id in string.gmatch(os.getenv("LOAD_PATCH_IDS") or "", "%d+") do
    patch_ids[#patch_ids + 1] = tonumber(id)
  end
  assert(#patch_ids > 0, "no ids in LOAD_PATCH_IDS")
  local stride = tonumber(os.getenv("LOAD_THREADS") or "1")
  local keys_file = assert(os.getenv("LOAD_NEW_KEYS"), "LOAD_NEW_KEYS is not set")
  local i = 0
  for line in io.lines(keys_file) do
    if i % stride == (thread_id - 1) % stride then new_keys[#new_keys + 1] = line end
    i = i + 1
  end
end

local function post()
  local city, indicator, period = new_keys[next_new]:match("^(%S+) (%S+) (%d+)$")
  next_new = next_new + 1
  bump(counts, "issued_create")
  local body = string.format(
    '{"city_code": "%s", "indicator_code": "%s", "period": %s, "value": %d.5, ' ..
    '"value_text": "%d.5", "qualifier": "exact", "source_id": %d, ' ..
    '"quote": "load test, thread %d"}',
    city, indicator, period, period, period, source_id, thread_id)
  return wrk.format("POST", "/api/v1/observations" .. reason, json_headers, body)
end

local function patch()
  -- a note no earlier write set, so every PATCH changes the row and writes a version
  sequence = sequence + 1
  bump(counts, "issued_update")
  local id = patch_ids[math.random(#patch_ids)]
  local body = string.format('{"note": "load test: thread %d, write %d"}', thread_id, sequence)
  return wrk.format("PATCH", "/api/v1/observations/" .. id .. reason, json_headers, body)
end

local function delete()
  -- each id is taken once, and only after its POST was answered 201, so it exists
  bump(counts, "issued_delete")
  local id = table.remove(created, math.random(#created))
  return wrk.format("DELETE", "/api/v1/observations/" .. id .. reason, key_headers)
end

function request()
  if math.random() >= write_share then
    bump(counts, "issued_read")
    return read_request()
  end
  local pick = math.random(3)
  if pick == 1 and #created > 0 then return delete() end
  if pick <= 2 and next_new <= #new_keys then return post() end
  return patch()
end

local function header(headers, name)
  for k, v in pairs(headers) do
    if string.lower(k) == name then return v end
  end
  return nil
end

-- wrk does not say which request an answer is for, so the answer says it: 201 is a POST
-- (its Location names the new row), 204 a DELETE, and a 200 without an ETag a PATCH (every
-- GET under /api/v1 carries the data version as its ETag; bench/load.py checks that first).
function response(status, headers, body)
  bump(counts, "status_" .. math.floor(status / 100) .. "xx")
  if status == 201 then
    bump(counts, "ok_create")
    local id = (header(headers, "location") or ""):match("/(%d+)$")
    if id then created[#created + 1] = tonumber(id) else bump(counts, "create_without_location") end
  elseif status == 204 then
    bump(counts, "ok_delete")
  elseif status == 200 and header(headers, "etag") == nil then
    bump(counts, "ok_update")
  elseif status >= 200 and status < 300 or status == 304 then
    bump(counts, "ok_read")
  else
    bump(failures, tostring(status))
    if counts.first_failure == nil then
      counts.first_failure = status .. " " .. string.sub(body or "", 1, 300):gsub('[%c"\\]', " ")
    end
  end
end

local function to_json(tbl)
  local parts = {}
  for k, v in pairs(tbl) do
    local value = type(v) == "string" and '"' .. v .. '"' or tostring(v)
    parts[#parts + 1] = string.format('"%s": %s', k, value)
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
  base_done(summary, latency, requests)
  local total, failed = {}, {}
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("counts")) do
      total[k] = type(v) == "number" and (total[k] or 0) + v or total[k] or v
    end
    for k, v in pairs(thread:get("failures")) do failed[k] = (failed[k] or 0) + v end
  end
  io.write(string.format('LOAD_JSON {"counts": %s, "failures": %s}\n', to_json(total), to_json(failed)))
end
