'use strict';
// subscription_count (enabled for the app): C1 subscribes, then C2; both must see
// pusher:subscription_count 2. Then C2 unsubscribes and C1 sees 1.
const { env, makeClient, connected, subscribed, until, main } = require('./lib');

main(async () => {
  const channelName = env('CHANNEL');
  const c1 = makeClient();
  const c2 = makeClient();
  await Promise.all([connected(c1, 'C1'), connected(c2, 'C2')]);
  const counts = { c1: [], c2: [] };
  // Bind before subscribing so that no count is missed.
  const ch1 = c1.pusher.subscribe(channelName);
  ch1.bind('pusher:subscription_count', (data) => counts.c1.push(data));
  await subscribed(c1, channelName);
  const ch2 = c2.pusher.subscribe(channelName);
  ch2.bind('pusher:subscription_count', (data) => counts.c2.push(data));
  await until('subscription_count 2 on both clients', () => {
    const last = (list) => (list.length ? list[list.length - 1].subscription_count : null);
    return last(counts.c1) === 2 && last(counts.c2) === 2;
  });
  const atTwo = { c1: counts.c1.slice(), c2: counts.c2.slice(), c1_property: ch1.subscriptionCount, c2_property: ch2.subscriptionCount };
  c2.pusher.unsubscribe(channelName);
  await until('subscription_count 1 on C1 after C2 left', () => {
    const list = counts.c1;
    return list.length > atTwo.c1.length;
  });
  return { at_two: atTwo, c1_after_unsubscribe: counts.c1.slice(atTwo.c1.length) };
});
