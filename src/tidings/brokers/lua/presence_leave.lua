-- Remove a socket of a user from a presence channel.
-- KEYS[1] members hash; KEYS[2] sockets of the user in the channel; KEYS[3] this node's index
-- ARGV[1] user_id; ARGV[2] "node/socket"; ARGV[3] index entry
-- Returns 1 when that was the user's last socket in the channel (member_removed is due).
local removed = redis.call('SREM', KEYS[2], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[3])
if removed == 1 and redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
