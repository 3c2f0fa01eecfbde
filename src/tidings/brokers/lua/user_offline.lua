-- Forget a signed-in socket of a user.
-- KEYS[1] set of "node/socket" signed in as the user; KEYS[2] this node's user index
-- ARGV[1] "node/socket"; ARGV[2] index entry
-- Returns 1 when that was the user's last socket anywhere (the user went offline).
local removed = redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
if removed == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  return 1
end
return 0
