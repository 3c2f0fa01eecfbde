-- Report this node's connections to an app and read the other live nodes' (max_connections is
-- per app, cluster-wide). Redis server time, so nodes' clocks need not agree.
-- KEYS[1] hash node_id -> "count deadline_ms" ({prefix}:{app}:conns)
-- ARGV[1] this node's id; ARGV[2] its count; ARGV[3] how long the report holds (ms)
-- Returns the other nodes' connections; reports past their deadline (a dead node's) go.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local others = 0
local reports = redis.call('HGETALL', KEYS[1])
for i = 1, #reports, 2 do
  if reports[i] ~= ARGV[1] then
    local count, deadline = string.match(reports[i + 1], '^(%d+) (%d+)$')
    if count and tonumber(deadline) >= now then
      others = others + tonumber(count)
    else
      redis.call('HDEL', KEYS[1], reports[i])
    end
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. (now + tonumber(ARGV[3])))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return others
