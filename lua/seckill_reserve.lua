-- The flash-sale decision, atomically: window, per-buyer limit, stock; then take one unit,
-- count the buyer and record the reservation under its order_no. Nothing else decides who won.
-- Every key shares the activity's {hash tag}, so this runs on Redis Cluster too.
--
-- KEYS[1] info   hash: stock, start, end (ms), limit, active
-- KEYS[2] bought hash: user_id -> units held (returned on release)
-- KEYS[3] seqs   hash: user_id -> reservations ever made (never goes down: order uniqueness)
-- KEYS[4] resv   hash: order_no -> "user|seq|ms|state": R reserved, P published (the broker
--                confirmed its message), C claimed, O ordered, F failed (dead-lettered)
-- KEYS[5] last   hash: user_id -> latest order_no (for the result poll)
-- KEYS[6] tokens hash: sale-token nonce -> the order_no it was spent on (README "Sale tokens")
-- ARGV: one or more buyers' reservations, three values each: user_id, order_no, and the sale
--       token's nonce, "" when the sale takes none (the token's MAC and expiry were checked by the
--       caller; only its single use is decided here). Several in one call are decided one after
--       the other, exactly as that many calls in a row (a loop turn's buyers: one command).
-- Returns {code, seq, stock_left} per reservation, in order, flat: 1 won; -1 no activity,
-- -2 not started, -3 ended, -4 limit reached, -5 sold out, -6 the order_no is another buyer's (two
-- processes made the same number: nothing was written, the caller retries with a new one), -8 the
-- sale token was already spent on another order_no (nothing else written).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function reserve(user, order_no, nonce)
  local info = redis.call('HMGET', KEYS[1], 'stock', 'start', 'end', 'limit', 'active')
  if not info[1] or info[5] ~= '1' then return -1, 0, 0 end
  local existing = redis.call('HGET', KEYS[4], order_no)
  if existing then
    local owner, oseq = string.match(existing, '^(%d+)|(%d+)|')
    -- The same buyer's reservation under this number: this call is a resend of the one that made
    -- it (a reply lost to a dropped connection), so it is answered as that win, nothing taken twice.
    if owner == user then return 1, tonumber(oseq), tonumber(info[1]) end
    return -6, 0, 0
  end
  -- Spent here, atomically with the decision it admits, whatever that decision is: a token is one
  -- try, not one win. The same order_no may pass again (a stock bucket's caller retrying its
  -- buyer's home bucket within one request); a later request carries a new order_no and is refused.
  if nonce ~= '' and redis.call('HSETNX', KEYS[6], nonce, order_no) == 0
    and redis.call('HGET', KEYS[6], nonce) ~= order_no then
    return -8, 0, 0
  end
  if now < tonumber(info[2]) then return -2, 0, 0 end
  if now >= tonumber(info[3]) then return -3, 0, 0 end
  local held = tonumber(redis.call('HGET', KEYS[2], user) or '0')
  if held >= tonumber(info[4]) then return -4, 0, 0 end
  if tonumber(info[1]) <= 0 then return -5, 0, 0 end
  local left = redis.call('HINCRBY', KEYS[1], 'stock', -1)
  redis.call('HINCRBY', KEYS[2], user, 1)
  local seq = redis.call('HINCRBY', KEYS[3], user, 1)
  redis.call('HSET', KEYS[4], order_no, user .. '|' .. seq .. '|' .. now .. '|R')
  redis.call('HSET', KEYS[5], user, order_no)
  return 1, seq, left
end

local out = {}
for i = 1, #ARGV, 3 do
  local code, seq, left = reserve(ARGV[i], ARGV[i + 1], ARGV[i + 2] or '')
  out[#out + 1] = code
  out[#out + 1] = seq
  out[#out + 1] = left
end
return out
