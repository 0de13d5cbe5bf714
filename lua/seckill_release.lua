-- Gives a reservation's unit and the buyer's slot back, once: the HDEL is the guard, so a
-- second release of the same order_no changes nothing.
-- KEYS[1] info, KEYS[2] bought, KEYS[4] resv (KEYS[3] seqs is untouched: sequences never repeat)
-- ARGV[1] order_no
-- ARGV[2] 'unconfirmed' releases only a reservation whose message the broker never took
--         (state R: the publish provably failed); 'failed' only a dead-lettered one (state F, an
--         operator's decision); 'any' also a published, claimed or ordered one (its order was
--         closed).
-- Returns {1, stock_left} released; {0, 0} nothing to release; {-1, 0} kept (not in the state
-- the mode releases).
local mode = ARGV[2]
if mode ~= 'unconfirmed' and mode ~= 'failed' and mode ~= 'any' then return redis.error_reply('bad release mode') end
local r = redis.call('HGET', KEYS[4], ARGV[1])
if not r then return {0, 0} end
local user, state = string.match(r, '^(%d+)|%d+|%d+|(%a)$')
if (mode == 'unconfirmed' and state ~= 'R') or (mode == 'failed' and state ~= 'F') then return {-1, 0} end
redis.call('HDEL', KEYS[4], ARGV[1])
local left = redis.call('HINCRBY', KEYS[1], 'stock', 1)
if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then redis.call('HDEL', KEYS[2], user) end
return {1, left}
