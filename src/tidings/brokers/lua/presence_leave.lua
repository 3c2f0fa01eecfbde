-- Remove a socket of a user from a presence channel.
-- KEYS[1] members hash; KEYS[2] sockets of the user in the channel (one channel's slot)
-- ARGV[1] user_id; ARGV[2] "node/socket"
-- Returns 1 when that was the user's last socket in the channel (member_removed is due).
local removed = redis.call('SREM', KEYS[2], ARGV[2])
if removed == 1 and redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
