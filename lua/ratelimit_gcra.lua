-- GCRA (generic cell rate algorithm): a truly sliding limit, not fixed windows. A key holds the
-- "theoretical arrival time" of its next request; a request is allowed when that time is no
-- more than `burst` intervals ahead of now. Any number of checks, decided one after the other
-- exactly as that many calls in a row would (a tick's checks in one command); on a Redis
-- Cluster the caller sends only keys of one slot together.
-- KEYS[i] limiter key; ARGV[2i-1] its emission interval in ms (1000 / rate), ARGV[2i] its burst
-- Returns, per key: 1, 0 allowed, or 0, ms until the next request would be allowed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local out = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local allow_at = tat + interval - burst * interval
  if allow_at > now then
    out[#out + 1] = 0
    out[#out + 1] = math.ceil(allow_at - now)
  else
    local new_tat = tat + interval
    redis.call('SET', KEYS[i], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
    out[#out + 1] = 1
    out[#out + 1] = 0
  end
end
return out
