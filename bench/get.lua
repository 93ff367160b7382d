-- wrk script: GET the URL with a bearer token, as an API client of the dashboard would.
-- Usage: wrk ... -s get.lua URL -- TOKEN
-- Prints one line "WRKJSON {...}" with the summary when done.

local req = nil

function init(args)
  local path = wrk.path
  if path == nil or path == "" then path = "/" end
  local headers = {["Accept"] = "application/json"}
  if args[1] ~= nil and #args[1] > 0 then
    headers["Authorization"] = "Bearer " .. args[1]
  end
  req = wrk.format("GET", path, headers, nil)
end

function request()
  return req
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
