-- wrk script of the edgerec benchmark: replays a file of requests (the locust traffic mix) and prints
-- exact latency percentiles as one JSON line. Usage: wrk ... -s wrk_requests.lua -- requests.tsv
-- Each line of requests.tsv: METHOD <TAB> PATH <TAB> BODY (may be empty) [<TAB> Name: value]...
-- With EDGEREC_WRK_RATE=R (requests/s, this wrk process, one thread) the requests leave on a fixed schedule, one
-- every 1/R s whichever connection is free, instead of each connection sending its next one at once: an open
-- arrival process as long as a connection is free, which the JSON line checks (late_sends: requests that left
-- more than 1 ms after their slot because every connection was still waiting).
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } edgerec_timespec;
  int clock_gettime(int clock, edgerec_timespec *out);
]]
local clock = ffi.new("edgerec_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end
local interval_ms = 0
local next_slot = nil
local late_sends = 0
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
  local rate = tonumber(os.getenv("EDGEREC_WRK_RATE") or "0")
  if rate > 0 then interval_ms = 1000 / rate end
end

function delay()
  if interval_ms <= 0 then return 0 end
  local now = now_ms()
  if next_slot == nil then next_slot = now end
  local slot = next_slot
  next_slot = next_slot + interval_ms
  if slot < now then
    if now - slot > 1 then late_sends = late_sends + 1 end
    return 0
  end
  return slot - now
end

function request()
  position = position % count + 1
  return requests[position]
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local e = summary.errors
  local late_sends = 0
  for _, thread in ipairs(threads) do late_sends = late_sends + (thread:get("late_sends") or 0) end
  io.write(string.format(
    'EDGEREC_WRK {"requests":%d,"duration_us":%d,"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
    '"errors_status":%d,"errors_timeout":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,' ..
    '"late_sends":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency:percentile(99.9),
    latency.max, late_sends))
  -- The latency distribution at fixed quantiles, for a CDF plot: one more JSON line.
  local points = {}
  for _, q in ipairs({1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 98, 99, 99.5, 99.9, 99.99}) do
    points[#points + 1] = string.format("[%g,%d]", q, latency:percentile(q))
  end
  io.write("EDGEREC_WRK_CDF [" .. table.concat(points, ",") .. "]\n")
end
