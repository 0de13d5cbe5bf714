-- GCRA (generic cell rate algorithm): a truly sliding limit, not fixed windows. The key holds
-- the "theoretical arrival time" of the next request; a request is allowed when that time is
-- no more than `burst` intervals ahead of now. One key per call (Redis Cluster-safe).
-- KEYS[1] limiter key; ARGV[1] emission interval in ms (1000 / rate); ARGV[2] burst
-- Returns {1, 0} allowed, or {0, ms until the next request would be allowed}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat + interval - burst * interval
if allow_at > now then
  return {0, math.ceil(allow_at - now)}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return {1, 0}
