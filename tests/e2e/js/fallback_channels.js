'use strict';
// Public and private channels on TRANSPORT: subscribe both, then the test triggers EVENTS
// events on PUBLIC_CHANNEL and one on PRIVATE_CHANNEL (after them, so once it is here every
// public one would have been too: the server sends a connection's messages in order).
const { TRANSPORT, env, makeClient, connected, subscribed, until, step, main } = require('./fallback_lib');

main(async () => {
  const publicName = env('PUBLIC_CHANNEL');
  const privateName = env('PRIVATE_CHANNEL');
  const expected = Number(env('EVENTS'));
  const c = makeClient({ transport: TRANSPORT });
  await connected(c);
  const events = [];
  const pub = c.pusher.subscribe(publicName);
  pub.bind_global((event, data) => {
    if (!event.startsWith('pusher:')) {
      events.push({ channel: publicName, event, data });
    }
  });
  const priv = c.pusher.subscribe(privateName);
  priv.bind_global((event, data) => {
    if (!event.startsWith('pusher:')) {
      events.push({ channel: privateName, event, data });
    }
  });
  await subscribed(c, publicName);
  await subscribed(c, privateName);
  await step('subscribed', { socket_id: c.pusher.connection.socket_id });
  await until(`${expected} events and the private one`, () =>
    events.some((e) => e.channel === privateName),
  );
  return {
    events,
    socket_ids: c.socketIds,
    transports: c.transports,
    state: c.pusher.connection.state,
    closes: c.closes,
  };
});
