-- Moves reservations forward: R -> P once the broker confirmed its message, R or P -> C when a
-- consumer claims it (before writing the order), any -> O once the order is committed. Claim and
-- release are both atomic here, so exactly one of "the consumer writes the order" and "the
-- reservation is released" happens. A failed (dead-lettered) reservation is not claimable: what
-- becomes of it is the operator's decision (seckill_failed.lua).
-- One call for many order_nos: a loop turn's P marks, or a batch's claims, are one command.
-- KEYS[1] resv, KEYS[2] info; ARGV[1] target state 'P', 'C' or 'O', ARGV[2..] order_nos
-- Returns, per order_no in order: 1 done (or already there / past it), 0 no such reservation (it
-- was released) or not claimable (failed), -1 this Redis knows no such arming (a message of a sale
-- whose keys are gone or never were).
local target = ARGV[1]
local armed = nil
local out = {}
for i = 2, #ARGV do
  local no = ARGV[i]
  local r = redis.call('HGET', KEYS[1], no)
  local result = 1
  if not r then
    if armed == nil then armed = redis.call('EXISTS', KEYS[2]) == 1 end
    result = armed and 0 or -1
  else
    local head, state = string.match(r, '^(.*)|(%a)$')
    if target == 'O' or (target == 'P' and state == 'R') or (target == 'C' and (state == 'R' or state == 'P')) then
      redis.call('HSET', KEYS[1], no, head .. '|' .. target)
    elseif target == 'C' and state == 'F' then
      result = 0
    end
  end
  out[#out + 1] = result
end
return out
