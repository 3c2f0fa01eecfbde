-- A channel's position and, when asked, the stored publications after an offset.
-- KEYS[1] meta hash {e: epoch, s: top offset}  ({prefix}:{app#channel}:h)
-- KEYS[2] stream of publications, id = offset   ({prefix}:{app#channel}:s)
-- ARGV[1] epoch to start if the channel has none; ARGV[2] meta ttl (ms);
-- ARGV[3] first offset wanted; ARGV[4] at most this many (0: the position alone).
-- Returns {epoch, top, entries} with entries as XRANGE gives them.
local epoch = redis.call('HGET', KEYS[1], 'e')
local top = 0
if epoch then
  top = tonumber(redis.call('HGET', KEYS[1], 's')) or 0
else
  -- Read before any publication (or after the meta was lost): start the epoch now, so a
  -- client told this position is told a different one if the stream restarts.
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
end
local entries = {}
if tonumber(ARGV[4]) > 0 then
  entries = redis.call('XRANGE', KEYS[2], ARGV[3] .. '-0', '+', 'COUNT', ARGV[4])
end
return {epoch, top, entries}
