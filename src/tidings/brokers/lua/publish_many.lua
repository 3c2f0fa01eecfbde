-- PUBLISH many publications in one command: what a node's pipeline of plain publications
-- costs its Python side as one call and one reply instead of one per publication.
-- ARGV: topic, payload pairs, in order. Returns how many were published.
for i = 1, #ARGV, 2 do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
