-- The per-user upload quota of one UTC day: adds a committed request's files and bytes only
-- when both stay within their limits, atomically, so concurrent requests on any nodes cannot
-- together pass it. One key per call (Redis Cluster-safe).
-- KEYS[1] the user's day (a hash: files, bytes)
-- ARGV[1] files to add, ARGV[2] bytes to add, ARGV[3] files per day, ARGV[4] bytes per day
-- (0: no limit), ARGV[5] seconds the key lives
-- Returns {1, files, bytes} added, or {0, files, bytes, 'files' or 'bytes'} refused unchanged.
local files = tonumber(redis.call('HGET', KEYS[1], 'files') or '0')
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local addFiles = tonumber(ARGV[1])
local addBytes = tonumber(ARGV[2])
local maxFiles = tonumber(ARGV[3])
local maxBytes = tonumber(ARGV[4])
if maxFiles > 0 and files + addFiles > maxFiles then
  return {0, files, bytes, 'files'}
end
if maxBytes > 0 and bytes + addBytes > maxBytes then
  return {0, files, bytes, 'bytes'}
end
files = redis.call('HINCRBY', KEYS[1], 'files', addFiles)
bytes = redis.call('HINCRBY', KEYS[1], 'bytes', addBytes)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return {1, files, bytes}
