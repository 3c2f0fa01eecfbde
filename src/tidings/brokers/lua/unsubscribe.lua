-- Forget one subscriber of a channel.
-- KEYS[1] subscribers set ({prefix}:{app#channel}:subs)
-- ARGV[1] "node/socket"
-- Returns {1 if the socket was a subscriber else 0, the subscriber count after}. Idempotent.
local removed = redis.call('SREM', KEYS[1], ARGV[1])
return {removed, redis.call('SCARD', KEYS[1])}
