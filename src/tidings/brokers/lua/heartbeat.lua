-- Mark this node alive (Redis server time, so nodes' clocks need not agree) and list dead ones.
-- KEYS[1] sorted set node_id -> last heartbeat in ms ({prefix}:nodes)
-- ARGV[1] this node's id; ARGV[2] node TTL in ms
-- Returns {1 if this node was missing (new, or reaped by another node), {dead node ids}}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], now, ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return {added, dead}
