-- One request in the server's current minute for the bucket KEYS[1]: {count so far, seconds left}.
-- The counter key derives from KEYS[1] (same hash tag, same slot).
local t = redis.call('TIME')
local minute = math.floor(t[1] / 60)
local key = KEYS[1] .. ':' .. minute
local n = redis.call('INCR', key)
if n == 1 then redis.call('EXPIRE', key, 61) end
return {n, 60 - (t[1] % 60)}
