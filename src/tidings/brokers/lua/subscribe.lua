-- Count one socket as a subscriber of a channel, cluster-wide.
-- KEYS[1] set of "node/socket" subscribers of the channel  ({prefix}:{app#channel}:subs)
-- ARGV[1] "node/socket"
-- Returns the channel's subscriber count after the add. Idempotent. The app's occupied-channel
-- set and the node's index live in other slots: scripts.py writes them in the same pipeline.
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('SCARD', KEYS[1])
