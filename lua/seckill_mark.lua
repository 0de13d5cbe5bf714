-- Moves a reservation forward: R -> P once the broker confirmed its message, R or P -> C when a
-- consumer claims it (before writing the order), any -> O once the order is committed. Claim and
-- release are both atomic here, so exactly one of "the consumer writes the order" and "the
-- reservation is released" happens. A failed (dead-lettered) reservation is not claimable: what
-- becomes of it is the operator's decision (seckill_failed.lua).
-- KEYS[1] resv, KEYS[2] info; ARGV[1] order_no, ARGV[2] target state 'P', 'C' or 'O'
-- Returns 1 done (or already there / past it), 0 no such reservation (it was released) or not
-- claimable (failed), -1 this Redis knows no such arming (a message of a sale whose keys are gone
-- or never were).
local r = redis.call('HGET', KEYS[1], ARGV[1])
if not r then
  if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
  return 0
end
local head, state = string.match(r, '^(.*)|(%a)$')
local target = ARGV[2]
if target == 'O' or (target == 'P' and state == 'R') or (target == 'C' and (state == 'R' or state == 'P')) then
  redis.call('HSET', KEYS[1], ARGV[1], head .. '|' .. target)
  return 1
end
if target == 'C' and state == 'F' then return 0 end
return 1
