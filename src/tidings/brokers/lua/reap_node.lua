-- Remove everything a dead node held: its subscriptions, presence sockets and signed-in sockets.
-- Exactly one survivor reaps a node: the one whose ZREM succeeds.
-- KEYS[1] nodes sorted set; KEYS[2] the dead node's subscription index;
-- KEYS[3] its presence index; KEYS[4] its user index
-- ARGV[1] dead node id; ARGV[2] key prefix
-- Keys under the prefix are derived here from the index entries, so this script needs every
-- key on one Redis (not Redis Cluster; see docs/deployment.md).
-- Returns {{app, channel, user_id}... members removed}, {{app, user_id}... users gone offline},
-- {{app, channel}... channels whose subscription count changed},
-- {{app, channel}... channels left with no subscriber}.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return {{}, {}, {}, {}}
end
local sep = string.char(31)
local function split(entry, n)
  local parts, start = {}, 1
  for _ = 1, n - 1 do
    local i = string.find(entry, sep, start, true)
    if not i then return nil end
    parts[#parts + 1] = string.sub(entry, start, i - 1)
    start = i + 1
  end
  parts[#parts + 1] = string.sub(entry, start)
  return parts
end
local node = ARGV[1] .. '/'
local p = ARGV[2]
local recount, seen, vacated = {}, {}, {}
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local e = split(entry, 3)
  if e then
    local subs = p .. ':' .. e[1] .. ':subs:' .. e[2]
    if redis.call('SREM', subs, node .. e[3]) == 1 then
      local id = e[1] .. sep .. e[2]
      if not seen[id] then
        seen[id] = true
        recount[#recount + 1] = {e[1], e[2]}
      end
    end
    if redis.call('SCARD', subs) == 0 then
      if redis.call('SREM', p .. ':' .. e[1] .. ':channels', e[2]) == 1 then
        vacated[#vacated + 1] = {e[1], e[2]}
      end
    end
  end
end
local removed = {}
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local e = split(entry, 4)
  if e then
    local sockets = p .. ':' .. e[1] .. ':msock:' .. e[2] .. ':' .. e[4]
    if redis.call('SREM', sockets, node .. e[3]) == 1 and redis.call('SCARD', sockets) == 0 then
      redis.call('HDEL', p .. ':' .. e[1] .. ':members:' .. e[2], e[4])
      removed[#removed + 1] = {e[1], e[2], e[4]}
    end
  end
end
local offline = {}
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  local e = split(entry, 3)
  if e then
    local sockets = p .. ':' .. e[1] .. ':user:' .. e[3]
    if redis.call('SREM', sockets, node .. e[2]) == 1 and redis.call('SCARD', sockets) == 0 then
      offline[#offline + 1] = {e[1], e[3]}
    end
  end
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return {removed, offline, recount, vacated}
