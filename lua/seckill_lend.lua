-- Stock buckets: one bucket's side of a unit that another bucket's buyer takes (README "stock
-- buckets"). The buyer's home bucket ran dry; the unit comes from here, and the lend record says
-- so until the home bucket has recorded the reservation (then 'settle') or refused it (then
-- 'unlend' gives the unit back). A lend left behind by a crash is settled or returned by
-- reconciliation, which is why it carries the time it was made (Redis time, ms).
-- KEYS[1] info (this bucket's), KEYS[2] lends (hash order_no -> "home_bucket|ms")
-- ARGV[1] op: 'lend', 'unlend', 'settle' or 'probe'; ARGV[2] order_no; ARGV[3] home bucket
-- Returns
--   lend:   {1, stock_left, lent_at_ms} lent; {0, stock, lends_in_flight} nothing to lend;
--           {-1, 0, 0} no live arming here
--   unlend: {1, stock_left, 0} given back; {0, 0, 0} no such lend (already settled or returned)
--   settle: {1, 0, 0} forgotten; {0, 0, 0} no such lend
--   probe:  {1, stock, lends_in_flight}, or {-1, 0, 0} no arming here: an atomic look at
--           whether this bucket is empty for good (no stock, and no unit that may come back)
local op = ARGV[1]
if op == 'lend' then
  local info = redis.call('HMGET', KEYS[1], 'stock', 'active')
  if not info[1] or info[2] ~= '1' then return {-1, 0, 0} end
  local existing = redis.call('HGET', KEYS[2], ARGV[2])
  if existing then
    -- A resend of the call that made it: answered as that lend, nothing taken twice.
    return {1, tonumber(info[1]), tonumber(string.match(existing, '|(%d+)$'))}
  end
  if tonumber(info[1]) <= 0 then return {0, tonumber(info[1]), redis.call('HLEN', KEYS[2])} end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local left = redis.call('HINCRBY', KEYS[1], 'stock', -1)
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. '|' .. now)
  return {1, left, now}
end
if op == 'unlend' then
  if redis.call('HDEL', KEYS[2], ARGV[2]) == 0 then return {0, 0, 0} end
  return {1, redis.call('HINCRBY', KEYS[1], 'stock', 1), 0}
end
if op == 'settle' then
  return {redis.call('HDEL', KEYS[2], ARGV[2]), 0, 0}
end
if op == 'probe' then
  local stock = redis.call('HGET', KEYS[1], 'stock')
  if not stock then return {-1, 0, 0} end
  return {1, tonumber(stock), redis.call('HLEN', KEYS[2])}
end
return redis.error_reply('bad lend op')
