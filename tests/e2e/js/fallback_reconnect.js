'use strict';
// Reconnect on TRANSPORT after the server goes away: the client subscribes to CHANNEL; the test
// stops the server (SIGTERM: every session closed with 4200, "reconnect now") and starts a new
// one on the same port. pusher-js must reach 'connected' again with a new socket id and
// resubscribe by itself, then receive an event triggered on the new server.
const { TRANSPORT, WAIT_MS, env, makeClient, connected, subscribed, until, framesOf, step, main } =
  require('./fallback_lib');

main(async () => {
  const channelName = env('CHANNEL');
  const c = makeClient({ transport: TRANSPORT });
  await connected(c);
  const events = [];
  const channel = c.pusher.subscribe(channelName);
  channel.bind('after', (data) => events.push(data));
  await subscribed(c, channelName);
  const firstSocket = c.pusher.connection.socket_id;
  await step('subscribed', { socket_id: firstSocket });
  await until('the server to close the session', () => c.closes.length >= 1, 4 * WAIT_MS);
  await until(
    'connected again and resubscribed',
    () =>
      c.socketIds.length >= 2 &&
      c.pusher.connection.state === 'connected' &&
      framesOf(c, 'pusher_internal:subscription_succeeded', channelName).length >= 2,
    4 * WAIT_MS,
  );
  await step('resubscribed', { socket_id: c.pusher.connection.socket_id });
  await until('the event from the new server', () => events.length >= 1);
  return {
    first_socket: firstSocket,
    socket_ids: c.socketIds,
    transports: c.transports,
    closes: c.closes,
    events,
    state: c.pusher.connection.state,
    states: c.states,
  };
});
