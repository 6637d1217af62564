-- wrk script of the edgerec benchmark: replays a file of requests (the locust traffic mix) and prints
-- exact latency percentiles as one JSON line. Usage: wrk ... -s wrk_requests.lua -- requests.tsv
-- Each line of requests.tsv: METHOD <TAB> PATH <TAB> BODY (may be empty) [<TAB> Name: value]...
local requests = {}
local count = 0
local position = 0

function init(args)
  for line in io.lines(args[1]) do
    local fields = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do
      fields[#fields + 1] = field
    end
    local headers = {}
    for j = 4, #fields do
      local name, value = fields[j]:match("^([^:]+):%s*(.*)$")
      if name then headers[name] = value end
    end
    local body = fields[3]
    if body == "" then body = nil end
    count = count + 1
    requests[count] = wrk.format(fields[1], fields[2], headers, body)
  end
  -- Threads start at different places of the list, as different shoppers would.
  position = math.random(count) - 1
end

function request()
  position = position % count + 1
  return requests[position]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'EDGEREC_WRK {"requests":%d,"duration_us":%d,"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
    '"errors_status":%d,"errors_timeout":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency:percentile(99.9),
    latency.max))
end
