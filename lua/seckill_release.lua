-- Gives a reservation's unit and the buyer's slot back, once: the HDEL is the guard, so a
-- second release of the same order_no changes nothing.
-- KEYS[1] info, KEYS[2] bought, KEYS[4] resv (KEYS[3] seqs is untouched: sequences never repeat)
-- ARGV[1] order_no
-- ARGV[2] 'unclaimed' releases only a reservation no consumer has claimed (publish failed,
--         reconciliation); 'any' also releases a claimed or ordered one (its order was closed).
-- Returns {1, stock_left} released; {0, 0} nothing to release; {-1, 0} claimed, kept.
local r = redis.call('HGET', KEYS[4], ARGV[1])
if not r then return {0, 0} end
local user, state = string.match(r, '^(%d+)|%d+|%d+|(%a)$')
if ARGV[2] == 'unclaimed' and state ~= 'R' then return {-1, 0} end
redis.call('HDEL', KEYS[4], ARGV[1])
local left = redis.call('HINCRBY', KEYS[1], 'stock', 1)
if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then redis.call('HDEL', KEYS[2], user) end
return {1, left}
