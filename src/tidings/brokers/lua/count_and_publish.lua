-- For each call of a publish-only client, in order: count its events against the backend
-- rate limit, then publish them unless the count is over it. Every call queued while the
-- last round was out costs one command and one reply, not one script call each.
-- KEYS[i] the rate counter of call i's second ({prefix}:{app}:rate:{second}: one app, so
--   one slot)
-- ARGV[1] the limit; then per call: events to add, publications n, then n topic, payload
-- Returns each call's new total (over the limit: its events were not published; they
-- still count).
local limit = tonumber(ARGV[1])
local totals = {}
local at = 2
for i = 1, #KEYS do
  local total = redis.call('INCRBY', KEYS[i], ARGV[at])
  redis.call('EXPIRE', KEYS[i], 2)
  local n = tonumber(ARGV[at + 1])
  at = at + 2
  if total <= limit then
    for j = at, at + 2 * n - 1, 2 do
      redis.call('PUBLISH', ARGV[j], ARGV[j + 1])
    end
  end
  at = at + 2 * n
  totals[i] = total
end
return totals
