-- Puts back a reservation Redis lost while its order lives in MySQL (a failover that dropped
-- writes, a Redis restored from an older snapshot): reconciliation repairs Redis from the
-- database, the source of truth for orders. The unit is taken from stock again and counted
-- for its buyer, so the invariant holds as if the reservation had never been lost.
-- KEYS[1] info, KEYS[2] bought, KEYS[3] seqs, KEYS[4] resv, KEYS[5] last
-- ARGV[1] order_no, ARGV[2] user_id, ARGV[3] seq, ARGV[4] reserved_at (ms)
-- Returns {1, stock_left} restored; {0, 0} the reservation is there; {-1, 0} no such arming.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then return {0, 0} end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4] .. '|O')
local left = redis.call('HINCRBY', KEYS[1], 'stock', -1)
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
-- Sequences never go back: a later reservation of this buyer must not reuse this one's seq.
if tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0') < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
end
redis.call('HSETNX', KEYS[5], ARGV[2], ARGV[1])
return {1, left}
