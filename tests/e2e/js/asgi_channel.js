'use strict';
// Tidings served as an ASGI app: connect on TRANSPORT (ws by default, or an HTTP fallback)
// under MOUNT when it is mounted (pusher-js's wsPath, and httpPath MOUNT + '/pusher'),
// subscribe to CHANNEL and receive EXPECTED events.
const { HOST, PORT, env, makeRecordingClient, connected, subscribed, until, step, main } = require('./lib');

main(async () => {
  const channelName = env('CHANNEL');
  const expected = Number(env('EXPECTED_EVENTS'));
  const mount = process.env.MOUNT || '';
  const transport = process.env.TRANSPORT || 'ws';
  const client = makeRecordingClient(
    {
      wsHost: HOST,
      wsPort: PORT,
      wsPath: mount,
      httpHost: HOST,
      httpPort: PORT,
      httpPath: `${mount}/pusher`,
      enabledTransports: [transport],
    },
    {},
    { transports: [] },
  );
  await connected(client);
  const channel = await subscribed(client, channelName);
  const events = [];
  channel.bind_global((name, data) => {
    if (!name.startsWith('pusher:')) {
      events.push({ event: name, data });
    }
  });
  await step('subscribed', { socket_id: client.pusher.connection.socket_id });
  await until(`${expected} events on ${channelName}`, () => events.length >= expected);
  return { events, states: client.states, transports: client.transports };
});
