-- Count events against the backend rate limit, then publish them unless the count is over it:
-- what a publish-only client's call costs in one round trip instead of one per command.
-- KEYS[1] the second's counter ({prefix}:{app}:rate:{second})
-- ARGV[1] events to add; ARGV[2] the limit; ARGV[3..] topic, payload pairs, in order
-- Returns the new total (over the limit: nothing was published; the events still count).
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 2)
if total > tonumber(ARGV[2]) then
  return total
end
for i = 3, #ARGV, 2 do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return total
