-- The dead-letter state of a reservation. 'fail': its message ended in the dead-letter queue, so
-- the buyer's "queued" ends: R, P or C -> F, with the reason kept for the poll and the REPL.
-- 'replay': an operator sends it again: F -> P (the caller publishes it once this said 1).
-- Each transition happens once: a second 'fail' or 'replay' of the same order_no answers 0.
-- KEYS[1] resv, KEYS[2] failed (hash order_no -> reason); ARGV[1] order_no, ARGV[2] 'fail' or
-- 'replay', ARGV[3] reason
-- Returns 1 done, 0 nothing to do (no such reservation, already there, or already ordered).
local r = redis.call('HGET', KEYS[1], ARGV[1])
if not r then return 0 end
local head, state = string.match(r, '^(.*)|(%a)$')
if ARGV[2] == 'fail' then
  if state == 'F' or state == 'O' then return 0 end
  redis.call('HSET', KEYS[1], ARGV[1], head .. '|F')
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  return 1
end
if state ~= 'F' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], head .. '|P')
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
