'use strict';
// Two clients on one public channel; the test triggers with socket_id = A's socket, then a
// sentinel event without exclusion. Once both have the sentinel, A must not have the first.
const { env, makeClient, connected, subscribed, until, framesOf, step, main } = require('./lib');

main(async () => {
  const channelName = env('CHANNEL');
  const a = makeClient();
  const b = makeClient();
  await Promise.all([connected(a, 'A'), connected(b, 'B')]);
  await subscribed(a, channelName);
  await subscribed(b, channelName);
  await step('subscribed', {
    socket_a: a.pusher.connection.socket_id,
    socket_b: b.pusher.connection.socket_id,
  });
  await until(
    'the sentinel on both clients',
    () => framesOf(a, 'sentinel', channelName).length > 0 && framesOf(b, 'sentinel', channelName).length > 0,
  );
  const events = (c) => framesOf(c, undefined, channelName).filter((f) => !f.event.startsWith('pusher'));
  return {
    a_events: events(a).map((f) => ({ event: f.event, data: f.data })),
    b_events: events(b).map((f) => ({ event: f.event, data: f.data })),
  };
});
