-- Shared by the wrk scripts of `make bench` (scripts/bench/run): counts every
-- answer whose status is not 2xx, per status, in each wrk thread, and prints
-- one machine-readable line at the end:
--   BENCH_JSON {"requests":…,"duration_us":…,"non2xx":…,"statuses":{"429":…},…}
-- A scenario script loads this file with dofile and may define init(args) and
-- request(); it must not define setup, response or done.

local threads = {}
local next_id = 1

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

non2xx = 0
statuses = {}

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      local key = tostring(status)
      statuses[key] = (statuses[key] or 0) + 1
   end
end

local function json_statuses(all)
   local parts = {}
   for k, v in pairs(all) do
      table.insert(parts, string.format('"%s":%d', k, v))
   end
   table.sort(parts)
   return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
   local total = 0
   local all = {}
   for _, t in ipairs(threads) do
      total = total + (t:get("non2xx") or 0)
      local s = t:get("statuses") or {}
      for k, v in pairs(s) do
         all[k] = (all[k] or 0) + v
      end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"statuses":%s,' ..
      '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
      summary.requests, summary.duration, summary.bytes, total, json_statuses(all),
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
