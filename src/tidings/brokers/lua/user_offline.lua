-- Forget a signed-in socket of a user.
-- KEYS[1] set of "node/socket" signed in as the user ({prefix}:{app}:user:{user})
-- ARGV[1] "node/socket"
-- Returns 1 when that was the user's last socket anywhere (the user went offline).
local removed = redis.call('SREM', KEYS[1], ARGV[1])
if removed == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  return 1
end
return 0
