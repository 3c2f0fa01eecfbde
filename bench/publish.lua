-- wrk script of bench/publish.py: replay a pool of pre-signed Pusher REST requests.
--
--   wrk ... -s bench/publish.lua http://127.0.0.1:PORT -- REQUEST_FILE
--
-- REQUEST_FILE is bench/loadclient.py's format ("M\n", then M times "LEN\n" + LEN bytes of a
-- whole HTTP request). The harness signs the pool just before each case: the signature
-- covers auth_timestamp and body_md5, which wrk's LuaJIT cannot compute, and the servers
-- accept a timestamp for 600 s, far longer than a case runs. Each wrk thread walks the
-- pool from its own offset, so the same bytes are not sent by every connection at once.
-- done() prints one JSON line that the harness parses (latencies in microseconds).

local pool = {}
local next_index = 1

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local count = tonumber(file:read("*l"))
   for i = 1, count do
      local length = tonumber(file:read("*l"))
      pool[i] = file:read(length)
   end
   file:close()
   next_index = (id or 0) * 7919 % #pool + 1
end

function setup(thread)
   thread:set("id", #threads_seen)
   threads_seen[#threads_seen + 1] = thread
end

threads_seen = {}

function request()
   local req = pool[next_index]
   next_index = next_index % #pool + 1
   return req
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      '{"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
      '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,' ..
      '"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
      summary.requests, summary.duration, summary.bytes, errors.connect, errors.read,
      errors.write, errors.status, errors.timeout, latency:percentile(50),
      latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
