-- wrk script: POST pre-generated live-shaped beacons in order, paced at a steady rate.
-- Usage: wrk -t1 -cN -dDs -s live.lua URL -- BODIES_FILE REQUESTS_PER_S
-- BODIES_FILE: lines "H<TAB>user agent<TAB>referer" define header sets 1, 2, ...; every
-- other line is "<header set><TAB><body>", one request, sent in file order.
-- Pacing: request k of the run is due at start + k / rate. Each connection, once free,
-- takes the next due time and waits for it (wrk's delay()); when every connection is
-- busy past a due time, requests go as soon as one is free, until back on schedule.
-- Prints one line "WRKJSON {...}" with the summary when done.

local ffi = require("ffi")
ffi.cdef [[
struct vidpulse_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clock_id, struct vidpulse_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local clock = ffi.new("struct vidpulse_timespec[1]")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock[0].tv_sec) * 1000 + tonumber(clock[0].tv_nsec) / 1e6
end

local header_sets = {}
local bodies = {}
local header_of = {}
local path = "/"
local interval_ms = 1
local started = nil
local slot = 0
local index = 0
local wrapped = 0

function init(args)
  path = wrk.path
  if path == nil or path == "" then path = "/" end
  for line in io.lines(args[1]) do
    local tag, rest = line:match("^([^\t]*)\t(.*)$")
    if tag == "H" then
      local ua, referer = rest:match("^([^\t]*)\t(.*)$")
      header_sets[#header_sets + 1] = {
        ["Content-Type"] = "text/plain;charset=UTF-8",
        ["User-Agent"] = ua,
        ["Referer"] = referer,
      }
    elseif tag ~= nil then
      bodies[#bodies + 1] = rest
      header_of[#header_of + 1] = tonumber(tag)
    end
  end
  interval_ms = 1000 / tonumber(args[2])
end

function delay()
  local now = now_ms()
  if started == nil then started = now end
  local due = started + slot * interval_ms
  slot = slot + 1
  if due <= now then return 0 end
  return math.floor(due - now)
end

function request()
  index = index + 1
  if index > #bodies then  -- more requests than bodies: counted, the bench reports it
    index = 1
    wrapped = wrapped + 1
  end
  return wrk.format("POST", path, header_sets[header_of[index]], bodies[index])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"latency_p50_us":%d,"latency_p99_us":%d,"latency_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
