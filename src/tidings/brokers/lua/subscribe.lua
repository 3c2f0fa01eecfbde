-- Count one socket as a subscriber of a channel, cluster-wide.
-- KEYS[1] set of "node/socket" subscribers of the channel  ({prefix}:{app}:subs:{channel})
-- KEYS[2] set of the app's occupied channels              ({prefix}:{app}:channels)
-- KEYS[3] this node's subscription index                  ({prefix}:node:{node}:subs)
-- ARGV[1] "node/socket"; ARGV[2] channel name; ARGV[3] index entry "app\31channel\31socket"
-- Returns the channel's subscriber count after the add. Idempotent.
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return redis.call('SCARD', KEYS[1])
