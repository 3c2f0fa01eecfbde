-- Count a signed-in socket of a user.
-- KEYS[1] set of "node/socket" signed in as the user ({prefix}:{app}:user:{user})
-- ARGV[1] "node/socket"
-- Returns 1 when this is the user's first socket anywhere (the user came online).
local added = redis.call('SADD', KEYS[1], ARGV[1])
if added == 1 and redis.call('SCARD', KEYS[1]) == 1 then
  return 1
end
return 0
