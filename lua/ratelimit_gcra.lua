-- GCRA (generic cell rate algorithm): a truly sliding limit, not fixed windows. A key holds the
-- "theoretical arrival time" of its next request; a request is allowed when that time is no
-- more than `burst` intervals ahead of now. A tick's checks in one command, each key once with
-- how many checks it had: decided one after the other exactly as that many calls in a row would
-- (the first ones are allowed while the key has room; once one is refused, the rest of that
-- key's are too, since a refusal changes nothing). On a Redis Cluster the caller sends only keys
-- of one slot together.
-- KEYS[i] limiter key; ARGV[3i-2] its emission interval in ms (1000 / rate), ARGV[3i-1] its
-- burst, ARGV[3i] its checks in this call
-- Returns, per key: how many of its checks were allowed (its first ones), then 0 when all were,
-- else ms until the next would be allowed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local out = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local checks = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local allowed = 0
  while allowed < checks and tat + interval - burst * interval <= now do
    -- As stored between two calls: the key's value is written to the microsecond.
    tat = tonumber(string.format('%.3f', tat + interval))
    allowed = allowed + 1
  end
  if allowed > 0 then redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000) end
  out[#out + 1] = allowed
  out[#out + 1] = allowed < checks and math.ceil(tat + interval - burst * interval - now) or 0
end
return out
