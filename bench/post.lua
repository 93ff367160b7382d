-- wrk script: POST the request bodies of a file (one body per line), round robin,
-- each thread from its own offset, as a browser's sendBeacon would (text/plain).
-- Usage: wrk ... -s post.lua URL -- BODIES_FILE
-- Prints one line "WRKJSON {...}" with the summary when done.

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

local requests_list = {}
local index = 0

function init(args)
  local path = wrk.path
  if path == nil or path == "" then path = "/" end
  local headers = {
    ["Content-Type"] = "text/plain;charset=UTF-8",
    ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ["Referer"] = "https://learn.example.com/courses",
  }
  for line in io.lines(args[1]) do
    if #line > 0 then
      requests_list[#requests_list + 1] = wrk.format("POST", path, headers, line)
    end
  end
  index = ((id or 1) * 7919) % #requests_list
end

function request()
  index = index % #requests_list + 1
  return requests_list[index]
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
