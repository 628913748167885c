-- wrk script for the end-to-end benchmark (benches/e2e/run.sh).
--
--   wrk ... -s load.lua URL -- w1   a new connection per request (`Connection: close`), each
--                                    with an X-Forwarded-For taken in turn from 4,096 addresses
--   wrk ... -s load.lua URL -- w2   keep-alive, GET /bytes/1048576; the X-Forwarded-For still
--                                    varies, so that the first request of each connection (the
--                                    one stickyd routes by) spreads over the workers
--   wrk ... -s load.lua URL -- w3   keep-alive, GET /, the X-Forwarded-For varying from one
--                                    request to the next on each connection: what a front proxy
--                                    that reuses its connections sends (`--rehash-per-request`)
--
-- The addresses are in 198.18.0.0/15 (RFC 2544, set aside for benchmarks): header values only,
-- nothing is ever sent to them. Every request is built once, in init(). done() prints one
-- machine-readable line that run.sh parses:
--   RESULT requests=N bytes=N duration_us=N p50_us=N p99_us=N errors=N non2xx=N

local ADDRESSES = 4096

local requests = {}
local next_index = 1
local threads = 0

function setup(thread)
   thread:set("thread_index", threads)
   threads = threads + 1
end

function init(args)
   local mode = args[1] or "w1"
   local path, connection
   if mode == "w1" then
      path, connection = "/", "close"
   elseif mode == "w2" then
      path, connection = "/bytes/1048576", "keep-alive"
   elseif mode == "w3" then
      path, connection = "/", "keep-alive"
   else
      error("load.lua: mode must be w1, w2 or w3, not " .. mode)
   end
   for i = 0, ADDRESSES - 1 do
      local xff = string.format("198.18.%d.%d", math.floor(i / 256), i % 256)
      requests[#requests + 1] = wrk.format("GET", path, {
         ["Host"] = "127.0.0.1",
         ["X-Forwarded-For"] = xff,
         ["Connection"] = connection,
      })
   end
   -- Threads start at different places in the list.
   next_index = ((thread_index or 0) * 1031) % ADDRESSES + 1
end

function request()
   local r = requests[next_index]
   next_index = next_index % #requests + 1
   return r
end

function done(summary, latency, _)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d bytes=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
      summary.requests, summary.bytes, summary.duration,
      latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.timeout, e.status))
end
