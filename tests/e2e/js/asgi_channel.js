'use strict';
// Tidings served as an ASGI app: connect (under WS_PATH when it is mounted, pusher-js's
// wsPath), subscribe to CHANNEL and receive EXPECTED events published through the node.
const { HOST, PORT, env, makeRecordingClient, connected, subscribed, until, step, main } = require('./lib');

main(async () => {
  const channelName = env('CHANNEL');
  const expected = Number(env('EXPECTED_EVENTS'));
  const wsPath = process.env.WS_PATH || '';
  const client = makeRecordingClient({ wsHost: HOST, wsPort: PORT, wsPath, enabledTransports: ['ws'] });
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
  return { events, states: client.states };
});
