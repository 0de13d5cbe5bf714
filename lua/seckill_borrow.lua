-- Stock buckets: the reservation of a unit lent by another bucket (lua/seckill_lend.lua), in the
-- buyer's home bucket. The same decision as lua/seckill_reserve.lua (window, per-buyer limit,
-- order_no), on the same home keys, so the per-user limit holds across buckets; but the home
-- stock is not touched (the unit left the lender's stock), and the reservation records where
-- the unit came from (borrows), which reconciliation reads before it returns a stale lend.
-- A lend older than ARGV[5] ms is refused: reconciliation returns lends only past twice that
-- age, so a reservation can never follow a lend that reconciliation gave back (no oversell).
-- KEYS[1] info, KEYS[2] bought, KEYS[3] seqs, KEYS[4] resv, KEYS[5] last (as seckill_reserve),
-- KEYS[6] borrows (hash order_no -> lender bucket; kept after a release: it says a reservation
-- was made for that lend)
-- ARGV[1] user_id, ARGV[2] order_no, ARGV[3] lender bucket, ARGV[4] lent_at (ms, the lender's
-- Redis time), ARGV[5] the oldest lend taken (ms)
-- Returns {code, seq, home_stock}: 1 won (also to a resend of the call that won); -1 no activity,
-- -2 not started, -3 ended, -4 limit reached, -6 the order_no is held by another reservation, -7
-- the lend is too old (give it back, retry).
local info = redis.call('HMGET', KEYS[1], 'stock', 'start', 'end', 'limit', 'active')
if not info[1] or info[5] ~= '1' then return {-1, 0, 0} end
-- An order_no already held is refused: the caller gives the lend back and retries with a new
-- number. Unless it is this borrow's own reservation, made of this lender's unit for this buyer:
-- then this is a resend of the call that made it (ioredis sends a command again when a closed
-- connection lost its answer), answered as that call was; refused, its lend would be given back
-- while the reservation holds the unit, and the unit sold twice.
local held_by = redis.call('HGET', KEYS[4], ARGV[2])
if held_by then
  local user, seq = string.match(held_by, '^(%d+)|(%d+)|')
  if user == ARGV[1] and redis.call('HGET', KEYS[6], ARGV[2]) == ARGV[3] then
    return {1, tonumber(seq), tonumber(info[1])}
  end
  return {-6, 0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(info[2]) then return {-2, 0, 0} end
if now >= tonumber(info[3]) then return {-3, 0, 0} end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held >= tonumber(info[4]) then return {-4, 0, 0} end
if now - tonumber(ARGV[4]) > tonumber(ARGV[5]) then return {-7, 0, 0} end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local seq = redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1] .. '|' .. seq .. '|' .. now .. '|R')
redis.call('HSET', KEYS[5], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[6], ARGV[2], ARGV[3])
return {1, seq, tonumber(info[1])}
