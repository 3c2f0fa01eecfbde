-- Append one publication to a channel's history and publish it with its position, atomically,
-- so offsets are assigned, stored and announced in one order on every node.
-- KEYS[1] meta hash {e: epoch, s: top offset}  ({prefix}:{app#channel}:h)
-- KEYS[2] stream of publications, id = offset   ({prefix}:{app#channel}:s)
-- ARGV[1] epoch to start if the channel has none; ARGV[2] stream size (MAXLEN);
-- ARGV[3] stream ttl (ms); ARGV[4] meta ttl (ms); ARGV[5] pub/sub topic;
-- ARGV[6] 1: SPUBLISH (sharded), 0: PUBLISH; ARGV[7] origin node; ARGV[8] exclude socket_id
-- ("": none); ARGV[9] the message.
-- Returns {epoch, offset} of the publication.
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  -- No meta: a first publication, or the meta expired or was lost with the data. Entries
  -- left from an older epoch would be read as this one's, so they go.
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 'x', ARGV[8], 'm', ARGV[9])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
-- brokers/bus.py: "\1" epoch "\0" offset "\0" origin "\0" exclude "\0" message
local payload = '\1' .. epoch .. '\0' .. offset .. '\0' .. ARGV[7] .. '\0' .. ARGV[8] .. '\0' .. ARGV[9]
if ARGV[6] == '1' then
  redis.call('SPUBLISH', ARGV[5], payload)
else
  redis.call('PUBLISH', ARGV[5], payload)
end
return {epoch, offset}
