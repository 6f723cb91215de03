-- Extends a live lease: KEYS[1] the set, ARGV holder, ttl ms. 0 when the lease had expired.
local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires or tonumber(expires) <= now then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
