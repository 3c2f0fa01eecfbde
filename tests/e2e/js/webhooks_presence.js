'use strict';
// Webhooks from pusher-js clients: A (user ALICE) and B (user BOB) join a presence channel
// and a private channel; A sends a client event on each (B receives both). After step
// "events", B disconnects; after step "b_left", A disconnects. The test checks what the
// webhook receiver got at each step.
const { env, makeClient, connected, subscribed, until, main, step } = require('./lib');

main(async () => {
  const presenceName = env('PRESENCE_CHANNEL');
  const privateName = env('PRIVATE_CHANNEL');
  const a = makeClient({ presence: { user_id: env('ALICE'), user_info: { name: 'Alice' } } });
  const b = makeClient({ presence: { user_id: env('BOB'), user_info: { name: 'Bob' } } });
  await Promise.all([connected(a, 'A'), connected(b, 'B')]);

  const presA = await subscribed(a, presenceName);
  const presB = await subscribed(b, presenceName);
  const privA = await subscribed(a, privateName);
  const privB = await subscribed(b, privateName);
  const onB = [];
  presB.bind('client-typing', (data, metadata) => onB.push({ channel: 'presence', data, metadata }));
  privB.bind('client-ping', (data) => onB.push({ channel: 'private', data }));
  presA.trigger('client-typing', { typing: true });
  privA.trigger('client-ping', { n: 1 });
  await until('both client events on B', () => onB.length >= 2);
  await step('events', { socket_a: a.pusher.connection.socket_id });

  b.pusher.disconnect();
  await until('B to be disconnected', () => b.pusher.connection.state === 'disconnected');
  await step('b_left');

  a.pusher.disconnect();
  await until('A to be disconnected', () => a.pusher.connection.state === 'disconnected');
  return { on_b: onB };
});
