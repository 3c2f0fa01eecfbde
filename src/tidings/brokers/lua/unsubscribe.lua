-- Forget one subscriber of a channel; the channel leaves the occupied set with its last one.
-- KEYS[1] subscribers set; KEYS[2] occupied-channels set; KEYS[3] this node's subscription index
-- ARGV[1] "node/socket"; ARGV[2] channel name; ARGV[3] index entry
-- Returns the subscriber count after the removal. Idempotent.
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[3])
local n = redis.call('SCARD', KEYS[1])
if n == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
end
return n
