'use strict';
// Public channel over three nodes: A on node 0, B on node 1, C on node 2 subscribe CHANNEL and
// all three see subscription_count 3 (a cluster-wide count). The test then triggers on node 0
// over REST: first, second, third, then "excluded" with socket_id = B's socket (B is on node 1),
// then "sentinel". Once everybody has the sentinel, the lists are complete.
const { env, makeClientOn, connected, subscribed, until, framesOf, appEvents, step, main } = require('./cluster_lib');

main(async () => {
  const channelName = env('CHANNEL');
  const clients = [makeClientOn(0), makeClientOn(1), makeClientOn(2)];
  await Promise.all(clients.map((c, i) => connected(c, `client on node ${i}`)));
  const counts = clients.map(() => []);
  for (const [i, client] of clients.entries()) {
    // Bind before the subscription succeeds so no count is missed.
    const channel = client.pusher.subscribe(channelName);
    channel.bind('pusher:subscription_count', (data) => counts[i].push(data.subscription_count));
    await subscribed(client, channelName);
  }
  await until('subscription_count 3 on every client', () =>
    counts.every((list) => list.length > 0 && list[list.length - 1] === 3),
  );
  const countProperties = clients.map((c) => c.pusher.channel(channelName).subscriptionCount);
  await step('subscribed', { sockets: clients.map((c) => c.pusher.connection.socket_id) });
  await until('the sentinel on every client', () =>
    clients.every((c) => framesOf(c, 'sentinel', channelName).length > 0),
  );
  return {
    events: clients.map((c) => appEvents(c, channelName)),
    counts,
    count_properties: countProperties,
  };
});
