-- Moves a reservation forward: R -> C when a consumer claims it (before writing the order),
-- C -> O once the order is committed. Claim and release are both atomic here, so exactly one
-- of "the consumer writes the order" and "the reservation is released" happens.
-- KEYS[1] resv, KEYS[2] info; ARGV[1] order_no, ARGV[2] target state 'C' or 'O'
-- Returns 1 done (or already there / past it), 0 no such reservation (it was released),
-- -1 this Redis knows no such arming (a message of a sale whose keys are gone or never were).
local r = redis.call('HGET', KEYS[1], ARGV[1])
if not r then
  if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
  return 0
end
local head, state = string.match(r, '^(.*)|(%a)$')
if ARGV[2] == 'O' or state == 'R' then
  redis.call('HSET', KEYS[1], ARGV[1], head .. '|' .. ARGV[2])
end
return 1
