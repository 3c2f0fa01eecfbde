'use strict';
// Client events between two clients A and B.
//  private: A triggers client-typing, B receives it; B answers client-ack, and once A has the
//           ack A's own client-typing would already have been echoed back if it were.
//  presence: A triggers client-hi; B's callback gets metadata {user_id: A's user id}.
//  public:  pusher-js lets channel.trigger() send on a public channel; the server must refuse it
//           with pusher:error to A and deliver nothing to B. A then sends client-sentinel on the
//           private channel: once B has it, B would already have had the public one.
const { env, makeClient, connected, subscribed, until, framesOf, main } = require('./lib');

main(async () => {
  const privateName = env('PRIVATE_CHANNEL');
  const presenceName = env('PRESENCE_CHANNEL');
  const publicName = env('PUBLIC_CHANNEL');
  const a = makeClient({ presence: { user_id: env('USER_A'), user_info: { name: 'A' } } });
  const b = makeClient({ presence: { user_id: env('USER_B'), user_info: { name: 'B' } } });
  await Promise.all([connected(a, 'A'), connected(b, 'B')]);
  const result = {};

  // Private channel.
  const privA = await subscribed(a, privateName);
  const privB = await subscribed(b, privateName);
  const typingOnB = [];
  const ackOnA = [];
  privB.bind('client-typing', (data, metadata) => typingOnB.push({ data, metadata }));
  privA.bind('client-ack', (data, metadata) => ackOnA.push({ data, metadata }));
  result.trigger_returned = privA.trigger('client-typing', { typing: true, text: 'héllo ✓' });
  await until('client-typing on B', () => typingOnB.length > 0);
  privB.trigger('client-ack', { ok: 1 });
  await until('client-ack on A', () => ackOnA.length > 0);
  result.private = {
    typing_on_b: typingOnB,
    ack_on_a: ackOnA,
    typing_frames_on_a: framesOf(a, 'client-typing'),
    typing_frames_on_b: framesOf(b, 'client-typing', privateName),
  };

  // Presence channel.
  const presA = await subscribed(a, presenceName);
  const presB = await subscribed(b, presenceName);
  const hiOnB = [];
  presB.bind('client-hi', (data, metadata) => hiOnB.push({ data, metadata }));
  presA.bind('client-hi', (data, metadata) => hiOnB.push({ data, metadata, wrongly_on: 'a' }));
  presA.trigger('client-hi', 'just a string');
  await until('client-hi on B', () => hiOnB.length > 0);
  result.presence = { hi_on_b: hiOnB, hi_frames_on_b: framesOf(b, 'client-hi', presenceName) };

  // Public channel.
  const pubA = await subscribed(a, publicName);
  await subscribed(b, publicName);
  const errorsBefore = a.errors.length;
  pubA.trigger('client-x', { n: 1 });
  await until('pusher:error on A after a public client event', () => framesOf(a, 'pusher:error').length > 0);
  const sentinelOnB = [];
  privB.bind('client-sentinel', (data) => sentinelOnB.push(data));
  privA.trigger('client-sentinel', { last: true });
  await until('client-sentinel on B', () => sentinelOnB.length > 0);
  result.public = {
    error_frames_on_a: framesOf(a, 'pusher:error'),
    connection_errors_on_a: a.errors.slice(errorsBefore),
    client_x_on_b: framesOf(b, 'client-x'),
    client_x_on_a: framesOf(a, 'client-x'),
    sentinel_on_b: sentinelOnB,
    a_state: a.pusher.connection.state,
    a_closes: a.closes,
  };
  return result;
});
