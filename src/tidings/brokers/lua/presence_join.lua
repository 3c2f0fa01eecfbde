-- Add a socket of a user to a presence channel; members are users, not sockets.
-- KEYS[1] hash user_id -> user_info JSON of the channel   ({prefix}:{app#channel}:members)
-- KEYS[2] set of "node/socket" of this user in the channel ({prefix}:{app#channel}:msock:{user})
-- ARGV[1] user_id; ARGV[2] user_info JSON; ARGV[3] "node/socket"; ARGV[4] max members
-- Returns {accepted (0/1), first socket of the user (0/1), HGETALL of the members}.
-- A new user is refused when the channel already has max members (the limit is cluster-wide).
local present = redis.call('SCARD', KEYS[2]) > 0
if not present and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return {0, 0, redis.call('HGETALL', KEYS[1])}
end
local added = redis.call('SADD', KEYS[2], ARGV[3])
local first = 0
if not present and added == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  first = 1
end
return {1, first, redis.call('HGETALL', KEYS[1])}
