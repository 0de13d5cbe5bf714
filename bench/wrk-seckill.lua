-- wrk script for bench/seckill.ts: POST /api/seckill, each request with the next buyer's token
-- (BENCH_TOKENS: a file with one token per line); counts answers by HTTP status and envelope
-- code, and prints a JSON summary at the end. With BENCH_UNTIL_SOLD_OUT=1 the thread stops at the
-- first "sold out" answer, or once every token has an answer (the drain run: buyers arrive at
-- once until nothing is left, however long the wins take on this machine).
local tokens = {}
for line in io.lines(os.getenv("BENCH_TOKENS")) do tokens[#tokens + 1] = line end
local body = '{"product_id":' .. os.getenv("BENCH_PRODUCT") .. '}'
-- BENCH_SALE_TOKENS (optional): a file of sale tokens, line i for the buyer of line i; then each
-- buyer's body carries its sale token.
local bodies = nil
local sale_tokens_file = os.getenv("BENCH_SALE_TOKENS") or ""
if sale_tokens_file ~= "" then
  bodies = {}
  for line in io.lines(sale_tokens_file) do
    bodies[#bodies + 1] = '{"product_id":' .. os.getenv("BENCH_PRODUCT") .. ',"sale_token":"' .. line .. '"}'
  end
end
-- A monotonic clock in ms (LuaJIT's FFI): the arrivals below, and the opening's length.
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1
local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
-- The sale's opening as the buyers see it: from the run's first request to the last win's answer
-- (global, for done() to read from the thread).
local started = nil
last_win_ms = 0
local i = 0
local until_sold_out = os.getenv("BENCH_UNTIL_SOLD_OUT") == "1"
local answered = 0
answers = {}

request = function()
  if not started then started = now_ms() end
  i = i + 1
  local n = (i - 1) % #tokens + 1
  local t = tokens[n]
  return wrk.format("POST", "/api/seckill", { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. t }, bodies and bodies[n] or body)
end

response = function(status, headers, body)
  local key = status .. "/" .. (string.match(body, '"code":(%-?%d+)') or "?")
  answers[key] = (answers[key] or 0) + 1
  answered = answered + 1
  if key == "200/0" then last_win_ms = now_ms() - started end
  if until_sold_out and (key == "409/60003" or answered >= #tokens) then wrk.thread:stop() end
end

-- done() runs in the main script's state: the counts live in each thread's.
local threads = {}
setup = function(thread) threads[#threads + 1] = thread end

done = function(summary, latency, requests)
  local e = summary.errors
  local opening = 0
  for _, t in ipairs(threads) do opening = math.max(opening, t:get("last_win_ms")) end
  io.write(string.format('BENCH_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.0f,"last_win_ms":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean, opening))
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("answers")) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do parts[#parts + 1] = string.format('"%s":%d', k, v) end
  io.write("BENCH_ANSWERS {" .. table.concat(parts, ",") .. "}\n")
end

-- BENCH_RATE > 0: the offered load, in requests per second. Buyers arrive at random (a Poisson
-- process: exponentially distributed gaps between arrivals) at that rate, whatever the answers'
-- latency, as long as a connection is free; each request waits for the next arrival. The mall is
-- measured below its limit instead of flat out, where latency is only the queue of connections
-- waiting their turn. The arrivals are those of wrk's thread (one, -t1) over all its connections.
local rate = tonumber(os.getenv("BENCH_RATE") or "0")
if rate > 0 then
  local gap_ms = 1000 / rate
  local next_arrival = nil
  math.randomseed(os.time())
  -- An arrival that finds every connection busy is not made up later (no burst of catch-up).
  delay = function()
    local now = now_ms()
    next_arrival = math.max(next_arrival or now, now) - math.log(1 - math.random()) * gap_ms
    return next_arrival - now
  end
end
