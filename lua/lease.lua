-- A lease's owner keeps or gives up its key, and nobody else's: a lease that expired and was
-- taken by another owner is neither extended nor deleted by the old one.
-- KEYS[1] the lease; ARGV[1] owner, ARGV[2] 'renew' or 'release', ARGV[3] ttl (ms, renew)
-- Returns 1 done, 0 the key is not this owner's (expired, or taken by another).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == 'renew' then return redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return redis.call('DEL', KEYS[1])
